"""The `feed:` section: one link (the `url`, `api_key` and `cex` of the section itself, as always), or
several (`feed.links`), each its own WebSocket to its own endpoint or with its own key. Settings given
at `feed:` level (heartbeat and handshake timeouts, reconnect delays, the key, `cex`) apply to every
link that does not set its own."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from bridge.schema import SchemaError, check_section
from bridge.secrets import Secret

DEFAULT_FEED_URL = "wss://cryptolisting.ws"
ArmWhen = Literal["any", "all"]
_LINK_NAME = re.compile(r"[a-z0-9_-]{1,20}")


@dataclass(frozen=True)
class ReconnectConfig:
    min_delay: float = 5.0
    max_delay: float = 300.0

    def __post_init__(self) -> None:
        check_section(self)
        if self.max_delay < self.min_delay:
            raise SchemaError(
                "max_delay", f"must be at least min_delay ({self.min_delay}), got {self.max_delay}"
            )


@dataclass(frozen=True)
class LinkConfig:
    """One of several feed links (`feed.links[]`). Unset settings come from the `feed:` section."""

    name: str
    url: str
    api_key: Secret | None = None
    cex: tuple[str, ...] | None = None
    heartbeat_timeout: float | None = None
    handshake_timeout: float | None = None
    reconnect: ReconnectConfig | None = None

    def __post_init__(self) -> None:
        check_section(self)
        if not _LINK_NAME.fullmatch(self.name):
            raise SchemaError("name", f'use 1-20 lowercase letters, digits, _ or -, got "{self.name}"')


@dataclass(frozen=True)
class FeedConfig:
    """What one link's supervisor and reader use; the `feed:` section is one too. With `links`, the
    section holds the shared settings and `link_configs()` gives each link's own FeedConfig."""

    api_key: Secret | None = None
    url: str = DEFAULT_FEED_URL
    cex: tuple[str, ...] | None = None
    heartbeat_timeout: float = 35.0
    handshake_timeout: float = 10.0
    max_frame_bytes: int = 1024 * 1024
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    links: tuple[LinkConfig, ...] = ()
    # Trading is armed while `any` link is healthy (welcomed, heartbeats fresh), or only while `all` are.
    arm_when: ArmWhen = "any"
    name: str | None = field(default=None, repr=False)  # the link's name; None for the single link

    def __post_init__(self) -> None:
        check_section(self)

    @property
    def key(self) -> Secret:
        """The API key this link sends (checked present when the config was loaded)."""
        if self.api_key is None:
            raise SchemaError("feed.api_key", "required key is missing")
        return self.api_key

    def link_configs(self) -> tuple[FeedConfig, ...]:
        """Each link's effective settings, in config order; the section itself when it has no links."""
        if not self.links:
            return (self,)
        return tuple(
            dataclasses.replace(
                self,
                name=link.name,
                url=link.url,
                api_key=link.api_key if link.api_key is not None else self.api_key,
                cex=link.cex if link.cex is not None else self.cex,
                heartbeat_timeout=link.heartbeat_timeout or self.heartbeat_timeout,
                handshake_timeout=link.handshake_timeout or self.handshake_timeout,
                reconnect=link.reconnect or self.reconnect,
                links=(),
            )
            for link in self.links
        )


def check_feed(feed: FeedConfig, *, url_given: bool = False) -> None:
    """The checks that span keys: the URLs, the exchange names, the links' names and keys."""
    if feed.links and url_given:
        raise SchemaError(
            "feed.links", "feed.url and feed.links cannot both be set: give each link its own url"
        )
    if not feed.links:
        if feed.name is not None:
            raise SchemaError("feed.name", "a name is given to links only (feed.links[].name)")
        if feed.api_key is None:
            raise SchemaError("feed.api_key", "required key is missing")
        _check_link(feed, "feed")
        return
    names = [link.name for link in feed.links]
    for i, link in enumerate(feed.links):
        where = f"feed.links[{i}]"
        if names.index(link.name) != i:
            raise SchemaError(f"{where}.name", f'duplicate link name "{link.name}"')
        if link.api_key is None and feed.api_key is None:
            raise SchemaError(
                f"{where}.api_key", "required key is missing (or set feed.api_key for every link)"
            )
    for i, effective in enumerate(feed.link_configs()):
        _check_link(effective, f"feed.links[{i}]")


def _check_link(cfg: FeedConfig, where: str) -> None:
    parts = urlsplit(cfg.url)
    if parts.scheme not in ("wss", "ws") or not parts.hostname:
        raise SchemaError(f"{where}.url", f'expected a wss:// URL, got "{cfg.url}"')
    if parts.scheme == "ws" and not is_loopback_host(parts.hostname):
        raise SchemaError(
            f"{where}.url", "ws:// (unencrypted) is allowed only for loopback hosts; use wss://"
        )
    for i, cex in enumerate(cfg.cex or ()):
        if not re.fullmatch(r"[a-z0-9_]+", cex):
            raise SchemaError(f"{where}.cex[{i}]", f'expected a lowercase exchange name, got "{cex}"')


def is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
