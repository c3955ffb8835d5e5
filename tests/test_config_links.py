"""`feed.links`: several feed links in one config, each inheriting what it does not set from `feed:`;
the single-link `feed:` block keeps working unchanged; mistakes name the link's key."""

from __future__ import annotations

import pytest

from bridge import config as config_mod
from bridge.errors import ConfigError

KEY_A = "dsk_" + "a" * 64
KEY_B = "dsk_" + "b" * 64

TWO_LINKS = f"""
feed:
  api_key: {KEY_A}
  heartbeat_timeout: 20
  reconnect: {{min_delay: 6, max_delay: 60}}
  cex: [binance, upbit]
  arm_when: all
  links:
    - {{name: main, url: "wss://cryptolisting.ws"}}
    - name: kr
      url: "wss://kr.cryptolisting.ws"
      api_key: {KEY_B}
      cex: [upbit]
      heartbeat_timeout: 40
"""


def test_the_single_link_block_is_one_unnamed_link() -> None:
    cfg = config_mod.loads(f"feed: {{api_key: {KEY_A}, cex: [binance]}}", source="c.yaml")
    [link] = cfg.feed.link_configs()
    assert link is cfg.feed and link.name is None
    assert link.url == "wss://cryptolisting.ws" and link.key.reveal() == KEY_A


def test_links_inherit_what_they_do_not_set() -> None:
    cfg = config_mod.loads(TWO_LINKS, source="c.yaml")
    main, kr = cfg.feed.link_configs()
    assert cfg.feed.arm_when == "all"
    assert (main.name, main.url, main.key.reveal(), main.cex) == (
        "main",
        "wss://cryptolisting.ws",
        KEY_A,
        ("binance", "upbit"),
    )
    assert (main.heartbeat_timeout, main.reconnect.min_delay) == (20, 6)
    assert (kr.name, kr.url, kr.key.reveal(), kr.cex, kr.heartbeat_timeout) == (
        "kr",
        "wss://kr.cryptolisting.ws",
        KEY_B,
        ("upbit",),
        40,
    )
    assert kr.reconnect.min_delay == 6 and not kr.links


def test_show_config_redacts_every_links_key() -> None:
    data = config_mod.redacted(config_mod.loads(TWO_LINKS, source="c.yaml"))
    assert KEY_A not in str(data) and KEY_B not in str(data)
    assert data["feed"]["links"][1]["api_key"] == "***"


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        (
            f'{{api_key: {KEY_A}, url: "wss://x.example", links: [{{name: a, url: "wss://a.example"}}]}}',
            "c.yaml: feed.links: feed.url and feed.links cannot both be set",
        ),
        (
            f'{{api_key: {KEY_A}, links: [{{name: a, url: "wss://a.example"}}, {{name: a, url: "wss://b.example"}}]}}',
            'c.yaml: feed.links[1].name: duplicate link name "a"',
        ),
        (
            f'{{api_key: {KEY_A}, links: [{{name: "A b", url: "wss://a.example"}}]}}',
            "c.yaml: feed.links[0].name:",
        ),
        (
            '{links: [{name: a, url: "wss://a.example"}]}',
            "c.yaml: feed.links[0].api_key: required key is missing",
        ),
        (
            f'{{api_key: {KEY_A}, links: [{{name: a, url: "http://a.example"}}]}}',
            "c.yaml: feed.links[0].url:",
        ),
        (f"{{api_key: {KEY_A}, links: [{{name: a}}]}}", "c.yaml: feed.links[0].url: required key is missing"),
        (
            f'{{api_key: {KEY_A}, links: [{{name: a, url: "wss://a.example", heartbeat_timeout: 0}}]}}',
            "c.yaml: feed.links[0].heartbeat_timeout: must be positive",
        ),
        (f"{{api_key: {KEY_A}, arm_when: most}}", "c.yaml: feed.arm_when: expected one of any, all"),
        (f"{{api_key: {KEY_A}, name: main}}", "c.yaml: feed.name: a name is given to links only"),
        ("{cex: [binance]}", "c.yaml: feed.api_key: required key is missing"),
    ],
)
def test_link_mistakes_name_the_key(feed: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_mod.loads(f"feed: {feed}", source="c.yaml")
    assert str(caught.value).startswith(message), str(caught.value)
