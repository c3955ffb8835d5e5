"""`bridge new-strategy NAME`: the commented template plugin and the matching test it writes."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.errors import ConfigError

STRATEGY = '''"""{title}: what this strategy trades, and why. (Written by `bridge new-strategy`.)"""

from __future__ import annotations

from dataclasses import dataclass

from bridge import Announcement, Context, Strategy


@dataclass(frozen=True)
class {cls}Params:
    """Settings from the config's `params:`. A wrong key or type is a config error (exit 78)."""

    exchange: str = "binance"  # a key of `exchanges:` in the config
    quote: str = "USDT"  # trade TICKER/QUOTE
    cost: float = 10.0  # quote currency to spend per ticker
    publishers: tuple[str, ...] = ("binance", "upbit")
    listing_types: tuple[str, ...] = ("spot_listing",)


class {cls}(Strategy):
    Params = {cls}Params
    params: {cls}Params

    async def on_start(self, ctx: Context) -> None:
        """Optional: runs once, after the exchanges are warm and before the first announcement."""
        ctx.log.info("{name}.ready", exchange=self.params.exchange)

    async def on_announcement(self, announcement: Announcement, ctx: Context) -> None:
        """Runs for every new announcement (never a test or a duplicate). Exceptions are logged and
        counted; the next announcement still arrives. Orders go through the trading gate, the risk
        limits and the journal: ctx.buy never raises for a refusal, it returns an OrderOutcome."""
        p = self.params
        if announcement.publisher not in p.publishers or announcement.listing_type not in p.listing_types:
            return
        for ticker in announcement.tickers:
            outcome = await ctx.buy(p.exchange, f"{{ticker}}/{{p.quote}}", cost=p.cost)
            ctx.log.info("{name}.order", symbol=outcome.symbol, status=outcome.status, reason=outcome.reason)

    async def on_stop(self) -> None:
        """Optional: runs once on shutdown (bounded in time)."""
'''

TEST = '''"""Tests for the {name} strategy: replay a hand-written stream and check the paper orders."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bridge import load_config_text, run_replay

PLUGIN = Path(__file__).resolve().parent.parent / "{plugin_rel}"
CONFIG = f"""
feed: {{{{api_key: replay-placeholder}}}}
exchanges: {{{{binance: {{{{}}}}}}}}
strategies:
  - {{{{name: {name}, module: {{PLUGIN}}, params: {{{{cost: 15}}}}}}}}
"""


@pytest.mark.asyncio  # explicit, so the test runs in any folder, whatever its pytest settings
async def test_buys_each_listed_ticker_that_trades(tmp_path: Path) -> None:
    """A Binance listing of two tickers, one of which trades, gives one paper buy of at most 15 USDT
    (price-capped: it buys what 15 USDT pays for at the cap, filled at the market price)."""
    t = 1_767_225_600_000_000_000
    lines = [
        {{"markets": {{"binance": {{"ABC/USDT": 2.0}}}}}},
        {{
            "t": t + 1_000_000,
            "msg": {{
                "type": "announcement",
                "title": "Binance Will List ABC and XYZ",
                "ticker": "ABC,XYZ",
                "publisher": "binance",
                "listingType": "spot_listing",
                "detectedTimestampUs": t // 1000,
            }},
        }},
    ]
    stream = tmp_path / "stream.jsonl"
    stream.write_bytes(b"\\n".join(orjson.dumps(line) for line in lines))
    report = await run_replay(stream, load_config_text(CONFIG))
    placed = [r.outcome for r in report.rows if r.outcome.ok]
    assert [o.symbol for o in placed] == ["ABC/USDT"]
    assert placed[0].result is not None and 0 < (placed[0].result.cost or 0) <= 15.0
'''


def new_strategy(name: str, strategies_dir: Path, tests_dir: Path) -> tuple[Path, Path]:
    """Write STRATEGIES_DIR/NAME.py and TESTS_DIR/test_NAME.py; never overwrite an existing file."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
        raise ConfigError(
            f"strategy name {name!r}: use lowercase letters, digits and _, starting with a letter"
        )
    cls = "".join(part.capitalize() for part in name.split("_"))
    plugin = strategies_dir / f"{name}.py"
    test = tests_dir / f"test_{name}.py"
    for path in (plugin, test):
        if path.exists():
            raise ConfigError(f"{path} exists already; not overwritten")
    strategies_dir.mkdir(parents=True, exist_ok=True)
    tests_dir.mkdir(parents=True, exist_ok=True)
    title = name.replace("_", " ").capitalize()
    plugin.write_text(STRATEGY.format(name=name, cls=cls, title=title))
    try:
        rel = plugin.resolve().relative_to(tests_dir.resolve().parent)
    except ValueError:
        rel = plugin.resolve()
    test.write_text(TEST.format(name=name, plugin_rel=rel.as_posix()))
    return plugin, test
