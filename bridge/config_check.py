"""What `check-config` says about a config, and what `run` refuses at start the same way: the mode in
words, the config_lint findings as lines (the first error raised), and `--connect`'s exchange check.
Moved out of cli.py, which keeps the commands only."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bridge import config as config_mod
from bridge import secrets
from bridge.errors import BridgeError, ConfigError, ExitCode

if TYPE_CHECKING:
    from bridge.trading.strategy import Strategy


def mode(config: config_mod.Config) -> str:
    """PAPER or LIVE, in words, with the exchanges a live config sends real orders to."""
    if config.trading.dry_run:
        return "PAPER (dry_run: true, no real orders)"
    venues = [f"{ex_id} (sandbox)" if ex.sandbox else ex_id for ex_id, ex in config.exchanges.items()]
    return f"LIVE (real orders on {', '.join(venues) or 'no exchange'})"


def lint_lines(config: config_mod.Config, strategies: Sequence[Strategy]) -> list[str]:
    """The config_lint warnings, one line each; raise ConfigError on its first error (exit 78). Checked
    with each strategy's params as it runs with them, its Params' defaults included."""
    from bridge.config_lint import lint

    params = {
        s.name: (
            {f.name: getattr(s.params, f.name) for f in dataclasses.fields(s.params)}
            if dataclasses.is_dataclass(s.params)
            else dict(s.params)
            if isinstance(s.params, dict)
            else {}
        )
        for s in strategies
    }
    found = lint(config, params)
    for finding in found:
        if finding.level == "error":
            raise ConfigError(config_mod.one_line(finding.line(config.source)))
    return [config_mod.one_line(finding.line(config.source)) for finding in found]


async def check_exchanges(config: config_mod.Config) -> int:
    """Connect to every configured exchange: clock offset, markets and (when keys are set) the keys."""
    from bridge.venues.exchange import Exchange

    code = ExitCode.OK
    for ex_id, ex_cfg in config.exchanges.items():
        # Keys are checked even for a paper config (so a switch to live holds no surprise); this
        # command never places an order.
        ex = Exchange(ex_id, ex_cfg, dry_run=ex_cfg.api_key is None)
        try:
            await ex.start(check_keys=ex_cfg.api_key is not None)
            print(f"{ex_id}: OK ({len(ex.ccxt.markets)} markets, clock offset {ex.time_offset_ms} ms)")
        except BridgeError as exc:
            print(f"{ex_id}: {secrets.scrub(str(exc))}")
            code = max(code, exc.exit_code)
        finally:
            await ex.close()
    return int(code)
