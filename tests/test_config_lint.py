"""check-config catches what costs money: each mistake below passed it once. An error is one line
naming the file and key, exit 78 (and `run` refuses it too); a warning is a line on stderr, exit 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import cli, config, config_check
from bridge.config_lint import Finding, lint
from bridge.errors import ConfigError

FEED = 'feed: {url: "ws://127.0.0.1:1", api_key: dsk_lint_key}\n'
EXCHANGES = "exchanges:\n  binance: {}\n"


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    code = cli.main(["check-config", "-c", str(path)])
    out, err = capsys.readouterr()
    return code, out, err.replace(str(path), "config.yaml")


def strategy(params: str) -> str:
    return f"strategies:\n  - {{name: buy, module: strategies.listing_buy, params: {{{params}}}}}\n"


# -- 1. booleans and duplicate keys --------------------------------------------------------------


@pytest.mark.parametrize("word", ["no", "yes", "on", "Off"])
def test_yaml_11_booleans_are_an_error_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], word: str
) -> None:
    """`dry_run: no` was read as false by YAML 1.1 (and `yes` as true): only true/false are booleans."""
    code, out, err = check(tmp_path, FEED + f"trading:\n  dry_run: {word}\n", capsys)
    assert (code, out) == (78, "")
    assert err.startswith(f"bridge: config.yaml: trading.dry_run: `{word}` (line 3) is not a boolean here")
    assert "write true or false" in err
    assert len(err.splitlines()) == 1


def test_yes_no_anywhere_is_refused_even_in_plugin_params(tmp_path: Path) -> None:
    """Also where bridge cannot know a boolean is meant (ccxt options, plugin params): `off` would
    otherwise reach them as a string, which Python takes as true."""
    text = FEED + "exchanges:\n  binance:\n    ccxt: {options: {adjustForTimeDifference: off}}\n"
    with pytest.raises(
        ConfigError, match=r"exchanges\.binance\.ccxt\.options\.adjustForTimeDifference: `off`"
    ):
        config.loads(text, "config.yaml")
    assert config.loads(FEED + 'trading: {allow_symbols: ["ON"]}\n').trading.allow_symbols == ("ON",)


def test_quoted_false_is_an_error_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(tmp_path, FEED + 'trading:\n  dry_run: "false"\n', capsys)
    assert code == 78
    assert err.strip() == (
        'bridge: config.yaml: trading.dry_run: expected true or false, got "false" '
        "(write true or false, unquoted: only those are booleans)"
    )


def test_a_duplicate_key_is_an_error_naming_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second `dry_run: false` used to win silently and make a paper config live."""
    code, out, err = check(tmp_path, FEED + "trading:\n  dry_run: true\n  dry_run: false\n", capsys)
    assert (code, out) == (78, "")
    assert err.startswith("bridge: config.yaml: trading.dry_run: duplicate key (lines 3 and 4)")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("feed: {url: a, url: b}\n", "feed.url"),
        ("trading: {}\ntrading: {}\n", "trading"),
        ("strategies:\n  - {name: a, module: m, params: {cost: 1, cost: 2}}\n", "strategies[0].params.cost"),
    ],
)
def test_duplicate_keys_anywhere(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config.loads(text, "c.yaml")
    assert str(raised.value).startswith(f"c.yaml: {key}: duplicate key")


def test_aliases_and_merge_keys_are_not_duplicates() -> None:
    """An alias is one node reached twice; a key that overrides a merged one is YAML's way to do it."""
    text = FEED + "x-base: &b {dry_run: true}\n"
    with pytest.raises(ConfigError, match="x-base: unknown key"):  # parsed: no duplicate-key error
        config.loads(text, "c.yaml")
    data = "a: &a {k: 1}\nb: {<<: *a, k: 2}\nc: [*a, *a]\n"
    assert config._parse(data) == {"a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 1}, {"k": 1}]}


# -- 2. the OK line says PAPER or LIVE first -----------------------------------------------------


def test_ok_line_says_paper(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(tmp_path, FEED, capsys)
    assert (code, err) == (0, "")
    assert out.startswith("PAPER (dry_run: true, no real orders): ")
    assert out.endswith("OK (0 strategies: none)\n")


def test_ok_line_says_live_and_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = FEED + "trading: {dry_run: false}\nexchanges:\n"
    text += "  binance: {api_key: k, secret: s}\n  bybit: {api_key: k, secret: s, sandbox: true}\n"
    code, out, _ = check(tmp_path, text, capsys)
    assert code == 0
    assert out.startswith("LIVE (real orders on binance, bybit (sandbox)): ")


# -- 3. strategy params --------------------------------------------------------------------------


def test_exchange_not_configured_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(tmp_path, FEED + EXCHANGES + strategy("exchange: bybit"), capsys)
    assert code == 78
    assert err.startswith(
        'bridge: config.yaml: strategies[0].params.exchange: "bybit" is not under exchanges:'
    )


def test_default_exchange_not_configured_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """listing_buy's default exchange is binance: checked with the values the strategy runs with."""
    code, _, err = check(tmp_path, FEED + "exchanges:\n  bybit: {}\n" + strategy(""), capsys)
    assert code == 78
    assert "strategies[0].params.exchange" in err


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ("publishers: [upbit, Upbit]", "strategies[0].params.publishers[1]"),
        ("publishers: [' binance']", "strategies[0].params.publishers[0]"),
        ("listing_types: [Spot_Listing]", "strategies[0].params.listing_types[0]"),
    ],
)
def test_publisher_or_listing_type_in_the_wrong_case_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], params: str, key: str
) -> None:
    """The feed sends `upbit`; `Upbit` never matches, so the strategy would never buy."""
    code, _, err = check(tmp_path, FEED + EXCHANGES + strategy(params), capsys)
    assert code == 78
    assert err.startswith(f"bridge: config.yaml: {key}: ")
    assert "never matches" in err


def test_unknown_publisher_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Lower case but not one the feed is known to send: the vocabulary grows (warning, not error)."""
    code, out, err = check(tmp_path, FEED + EXCHANGES + strategy("publishers: [okx]"), capsys)
    assert code == 0
    assert "OK (1 strategies: buy)" in out
    assert err.startswith('bridge: warning: config.yaml: strategies[0].params.publishers[0]: "okx" is not')


def test_quote_not_upper_case_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check(tmp_path, FEED + EXCHANGES + strategy("quote: usdt"), capsys)
    assert code == 78
    assert "strategies[0].params.quote: quotes are upper case, as ccxt spells them (write USDT)" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "trading: {max_order_cost: 10}\n" + strategy("cost: 50"),
            "50 is above trading.max_order_cost for USDT (10)",
        ),
        ("trading: {max_order_cost: {KRW: 1000}}\n" + strategy("cost: 5"), "names no limit for USDT"),
    ],
)
def test_cost_every_order_would_refuse_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    code, _, err = check(tmp_path, FEED + EXCHANGES + text, capsys)
    assert code == 0
    assert err.startswith("bridge: warning: config.yaml: strategies[0].params.cost: ")
    assert expected in err
    assert "every order would be refused" in err


@pytest.mark.parametrize("name", ["stop_loss", "trailing_stop", "max_slippage", "exit_slippage"])
def test_a_fraction_of_one_or_more_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """listing_buy's own Params refuse these; lint refuses them for any plugin with such a param."""
    code, _, err = check(tmp_path, FEED + EXCHANGES + strategy(f"{name}: 5"), capsys)
    assert code == 78
    assert f"params: {name} is a fraction" in err
    cfg = config.loads(FEED + f"strategies:\n  - {{name: x, module: m, params: {{{name}: 5}}}}\n")
    assert lint(cfg) == [
        Finding("error", f"strategies[0].params.{name}", "a fraction is meant (0.05 = 5 %); 5 is 500 %")
    ]


def test_max_slippage_of_one_or_more_is_an_error_for_any_plugin() -> None:
    """The plugin's own Params may refuse it too; lint names the key for any plugin with the param."""
    cfg = config.loads(FEED + "strategies:\n  - {name: x, module: m, params: {max_slippage: 1.0}}\n")
    assert lint(cfg) == [
        Finding("error", "strategies[0].params.max_slippage", "a fraction is meant (0.05 = 5 %); 1 is 100 %")
    ]


def test_take_profit_of_one_or_more_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """+200 % can be meant (a listing pump): warned, not refused."""
    code, _, err = check(tmp_path, FEED + EXCHANGES + strategy("take_profit: 2.0"), capsys)
    assert code == 0
    assert err.startswith("bridge: warning: config.yaml: strategies[0].params.take_profit: 2 sells at +200 %")


def test_user_plugin_params_get_the_same_checks_by_name() -> None:
    """A plugin's params are its own: checked only where a param has one of these names."""
    text = (
        FEED
        + "strategies:\n  - {name: x, module: m, params: {cost: 500, quote: USDT, stop_loss: 0.1, other: 7}}\n"
    )
    found = lint(config.loads(text))
    assert [(f.level, f.key) for f in found] == [("warning", "strategies[0].params.cost")]
    disabled = text.replace("module: m,", "module: m, enabled: false,")
    assert lint(config.loads(disabled)) == []


def test_unexpanded_variables_are_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`$VAR` is not expanded (only "${VAR}" is); an unclosed `${` is left as text."""
    text = (
        FEED
        + "state_dir: $HOME/state\nexchanges:\n  binance: {api_key: $BINANCE_KEY, ccxt: {uid: '${UID'}}\n"
    )
    code, _, err = check(tmp_path, text, capsys)
    assert code == 0
    lines = err.splitlines()
    assert lines[0].startswith(
        "bridge: warning: config.yaml: exchanges.binance.api_key: looks like an unexpanded"
    )
    assert lines[1].startswith("bridge: warning: config.yaml: exchanges.binance.ccxt.uid: looks like")
    assert lines[2].startswith("bridge: warning: config.yaml: state_dir: `$HOME` looks like an unexpanded")
    assert "BINANCE_KEY" not in lines[0] and "UID" not in lines[1]  # a secret's value is never shown


def test_a_password_holding_a_dollar_is_not_flagged() -> None:
    cfg = config.loads(FEED + "exchanges:\n  binance: {password: 'pa$word', api_key: 'ab$c'}\n")
    assert lint(cfg) == []


def test_run_refuses_the_same_errors_with_exit_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run` lints at start-up, before any connection: the daemon refuses what check-config refuses."""
    path = tmp_path / "config.yaml"
    path.write_text(FEED + f"state_dir: {tmp_path / 'state'}\n" + EXCHANGES + strategy("quote: usdt"))
    assert cli.main(["run", "-c", str(path)]) == 78
    assert "strategies[0].params.quote: quotes are upper case" in capsys.readouterr().err


def test_run_logs_warnings() -> None:
    """What `run` logs as `config.warning`: the lines check-config prints."""
    from bridge.trading.plugins import load_strategies

    cfg = config.loads(FEED + EXCHANGES + strategy("take_profit: 3"), "c.yaml")
    assert config_check.lint_lines(cfg, load_strategies(cfg)) == [
        "c.yaml: strategies[0].params.take_profit: 3 sells at +300 % (a fraction: 0.5 = +50 %); fine if that is meant"
    ]


def test_a_complex_key_made_of_an_alias_bomb_is_refused_quickly() -> None:
    """A mapping used as a key is not spelled out in the error (it may be an alias bomb)."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        bomb += f"{'abcdefghi'[i]}: &{'abcdefghi'[i]} [" + ", ".join([f"*{'abcdefghi'[i - 1]}"] * 9) + "]\n"
    with pytest.raises(ConfigError) as raised:
        config.loads(bomb + "? *i\n: yes\n", "c.yaml")
    assert str(raised.value).startswith("c.yaml: ?: `yes`")
