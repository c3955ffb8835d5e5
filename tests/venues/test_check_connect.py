"""`check-config --connect` per venue (issue 12): one config with an account on each of the four venues'
fakes (and a second account on one venue, `venue: bybit`), checked for real through ccxt: keys, clock,
markets and the position mode; a wrong secret on one venue is named, the others still say OK."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from bridge import cli
from bridge.sim.fake_binance_futures import FakeBinanceFutures
from bridge.sim.fake_bybit import FakeBybit
from bridge.sim.fake_gate import FakeGate
from bridge.sim.fake_okx import FakeOkx

KEY = "dsk_" + "c" * 64


def account(name: str, fake: object, *, venue: str | None = None, secret: str | None = None) -> str:
    ccxt = orjson.dumps(fake.ccxt_config()).decode()  # type: ignore[attr-defined]
    lines = [
        f"  {name}:",
        f"    api_key: {fake.api_key}",  # type: ignore[attr-defined]
        f"    secret: {secret or fake.secret}",  # type: ignore[attr-defined]
        "    market_types: [spot, swap]",
        f"    ccxt: {ccxt}",
    ]
    if venue is not None:
        lines.insert(1, f"    venue: {venue}")
    if isinstance(fake, FakeOkx):
        lines.insert(1, f"    password: {fake.passphrase}")
    return "\n".join(lines)


@pytest.mark.parametrize("wrong", [None, "okx"])
async def test_connect_checks_every_venue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], wrong: str | None
) -> None:
    async with (
        FakeBinanceFutures(markets=[("ABC", "USDT", 2.0)], perps=[("ABC", "USDT", 2.0)]) as binance,
        FakeBybit(markets=[("ABC", "USDT", 2.0)], perps=[("ABC", "USDT", 2.0)]) as bybit,
        FakeOkx() as okx,
        FakeGate() as gate,
    ):
        accounts = [
            account("binance", binance),
            account("bybit_main", bybit, venue="bybit"),
            account("bybit_sub", bybit, venue="bybit"),
            account("okx", okx, secret="wrong-secret-123456" if wrong == "okx" else None),
            account("gate", gate),
        ]
        path = tmp_path / "config.yaml"
        path.write_text(
            f'feed: {{url: "ws://127.0.0.1:1", api_key: {KEY}}}\ntrading: {{dry_run: false}}\n'
            f"state_dir: {tmp_path / 'state'}\nexchanges:\n" + "\n".join(accounts) + "\n"
        )
        code = await asyncio.to_thread(cli.main, ["check-config", "-c", str(path), "--connect"])
    out, err = capsys.readouterr()
    for name in ("binance", "bybit_main", "bybit_sub", "gate"):
        assert f"{name}: OK" in out, out
    assert ("okx: OK" in out) is (wrong is None)
    assert code == (0 if wrong is None else 77)
    assert "wrong-secret-123456" not in out + err
