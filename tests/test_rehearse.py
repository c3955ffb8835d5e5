"""`bridge rehearse`: the user's own config run for real (dry_run: false) against a local feed emulator and
local fake exchanges, driven end to end through the CLI: announcements typed on stdin (a pipe) or read
from a stream file, the orders shown as they happen, the user's files left alone."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import config as config_mod
from bridge.errors import ConfigError
from bridge.feed import stream_format
from bridge.sim.fake_binance import FakeBinance
from bridge.sim.fake_okx import FakeOkx
from bridge.sim.rehearse import BANNER, make_fake, swapped_config

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ROOT / "strategies"


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on: the config's /health port, which a rehearsal must not bind."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def user_config(tmp_path: Path, health_port: int, *, venue: str = "binance") -> Path:
    """A config as a user has it: real URLs, secrets from the environment (unset here), paper mode,
    /health on, its own state_dir (holding a journal-like file that must stay as it is)."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "keep.txt").write_text("the user's")
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
feed:
  api_key: ${{CRYPTOLISTING_API_KEY}}
  cex: [binance, upbit]
exchanges:
  {venue}:
    api_key: ${{BINANCE_API_KEY}}
    secret: ${{BINANCE_SECRET}}
    ccxt: {{apiKey: not-this-one, options: {{adjustForTimeDifference: false}}}}
trading: {{dry_run: true, max_event_age: 10, max_order_cost: 100}}
health: {{enabled: true, port: {health_port}}}
state_dir: {state}
strategies:
  - name: listing_buy
    module: {STRATEGIES}/listing_buy.py
    params: {{exchange: {venue}, quote: USDT, cost: 20, publishers: [upbit, binance],
              listing_types: [spot_listing]}}
"""
    )
    return path


def snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `path` (or `path` itself) with its bytes and mtime."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def rehearse(*args: str, stdin: str = "", cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}  # no secrets set: none is needed
    return subprocess.run(
        [sys.executable, "-m", "bridge", "rehearse", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env=env,
    )


def json_events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def order_lines(human: str) -> list[str]:
    return [line for line in human.splitlines() if line[:2].isdigit() and line[2] == ":"]


def test_typed_announcements_show_their_orders_and_leave_the_users_files_alone(
    tmp_path: Path, busy_port: int
) -> None:
    """Lines fed through a pipe: `ABC upbit` becomes a real (not paper) limit buy of ABC/USDT on the fake
    Binance, shown as a table row with its size, price cap and fill; `NOPE upbit` is shown skipped with
    its reason; a mistyped line is one line saying what was expected; a publisher the config does not
    subscribe to is said so, and an announcement no strategy acts on; the end of input ends it, exit 0. Not on a terminal: stdout is all JSON
    log lines. The config file and the config's state_dir are untouched, and /health (a port in use
    here) is not bound."""
    config = user_config(tmp_path, busy_port)
    before = snapshot(config) | snapshot(tmp_path / "state")
    proc = rehearse(
        "-c",
        str(config),
        stdin="ABC upbit\nNOPE upbit\nwhat\nXYZ bithumb\nGHI binance spot_delisting\n",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    human = proc.stderr
    assert human.splitlines()[0] == BANNER
    rows = order_lines(human)
    assert len(rows) == 2, human
    abc, nope = rows
    assert abc.split()[1:5] == ["listing_buy", "binance", "ABC/USDT", "buy"]
    assert "placed: filled" in abc and "paper" not in abc
    cap = float(abc.split()[7])
    assert 1.25 < cap <= 1.25 * 1.05 * 1.001  # the best ask + listing_buy's 5 % slippage, at most
    assert nope.split()[1:4] == ["listing_buy", "binance", "NOPE/USDT"]
    assert nope.rstrip().endswith("skipped: no_active_market")
    assert "not understood: expected TICKERS PUBLISHER [LISTING_TYPE]" in human
    assert (
        "XYZ (bithumb spot_listing): not sent, the daemon does not subscribe to it (feed.cex: binance, upbit)"
        in human
    )
    assert "GHI (binance spot_delisting): no order (no strategy acted on it)" in human
    assert "rehearsal ended: 3 announcements" in human
    events = json_events(proc.stdout)  # every stdout line is JSON
    placed = [e for e in events if e["event"] == "order.placed"]
    assert len(placed) == 1 and placed[0]["dry_run"] is False
    assert snapshot(config) | snapshot(tmp_path / "state") == before
    assert "Traceback" not in proc.stderr + proc.stdout


def test_quit_ends_it_and_what_follows_is_not_read(tmp_path: Path, busy_port: int) -> None:
    """`quit` ends the rehearsal at once, exit 0: a line after it is never announced."""
    proc = rehearse("-c", str(user_config(tmp_path, busy_port)), stdin="quit\nABC upbit\n", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert order_lines(proc.stderr) == []
    assert "rehearsal ended: 0 announcements" in proc.stderr


def test_a_script_lists_its_markets_and_replays_recorded_announcements_as_now(
    tmp_path: Path, busy_port: int
) -> None:
    """`--script` (the stream format): its markets are listed on the fake, a recorded announcement from
    months ago trades (its times move to now, its age kept), the same one recorded 60 s old is shown
    skipped as too old, a test announcement places nothing; then it exits 0 without reading stdin."""
    t0 = 1_767_225_600_000_000_000  # 2026-01-01, far older than trading.max_event_age
    ann = {"type": "announcement", "publisher": "upbit", "listingType": "spot_listing"}
    script = tmp_path / "script.jsonl"
    stream_format.write(
        script,
        [
            stream_format.markets_line({"binance": {"XYZ/USDT": 0.5}}),
            stream_format.message_line(
                {**ann, "title": "XYZ listing", "ticker": "XYZ", "detectedTimestampUs": t0 // 1000 - 5000},
                t_ns=t0,
            ),
            stream_format.message_line(
                {**ann, "title": "old news", "ticker": "ABC", "detectedTimestampUs": t0 // 1000 - 60_000_000},
                t_ns=t0 + 1_000_000_000,
            ),
            stream_format.message_line({**ann, "type": "test_announcement", "title": "t", "ticker": "GHI"}),
        ],
    )
    proc = rehearse(
        "-c",
        str(user_config(tmp_path, busy_port)),
        "--script",
        str(script),
        stdin="ABC upbit\n",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = order_lines(proc.stderr)
    assert len(rows) == 2, proc.stderr
    assert rows[0].split()[3] == "XYZ/USDT" and "placed: filled" in rows[0]
    assert rows[0].split()[7].startswith("0.52")  # capped at 0.5 x 1.05 (+ the fake's spread)
    assert rows[1].split()[3] == "ABC/USDT" and rows[1].rstrip().endswith("skipped: event_too_old")
    assert "rehearsal ended: 3 announcements" in proc.stderr


def test_the_swap_is_in_memory_and_complete() -> None:
    """The rehearsed config: the feed on the emulator (one link, its key), every account on its fake with
    the fake's keys (a credential in the account's ccxt settings dropped, its other settings kept),
    live mode, the temporary state_dir, alerts, /health and HA off; the config as loaded is unchanged."""
    text = """
feed: {api_key: real-feed-key-123456, links: [{name: main, url: "wss://cryptolisting.ws"},
                                              {name: kr, url: "wss://kr.cryptolisting.ws"}]}
exchanges:
  okx_main: {venue: okx, api_key: real-okx-key-1, secret: real-okx-secret, password: real-pass-1,
             ccxt: {secret: in-ccxt-too, options: {defaultType: spot}}}
  binance: {api_key: real-binance-key, secret: real-binance-secret}
trading: {dry_run: true}
health: {enabled: true}
state_dir: /var/lib/bridge
"""
    config = config_mod.loads(text, source="user.yaml")
    fakes = {"okx_main": FakeOkx(), "binance": FakeBinance()}
    out = swapped_config(
        config, feed_url="ws://127.0.0.1:1234", feed_key="dsk_local", fakes=fakes, state_dir=Path("/tmp/x")
    )
    assert (out.feed.url, out.feed.key.reveal(), out.feed.links) == ("ws://127.0.0.1:1234", "dsk_local", ())
    okx = out.exchanges["okx_main"]
    assert okx.api_key is not None and okx.api_key.reveal() == fakes["okx_main"].api_key
    assert okx.password is not None and okx.password.reveal() == FakeOkx().passphrase
    assert "secret" not in okx.ccxt and okx.ccxt["options"] == {"defaultType": "spot"}
    assert okx.ccxt["urls"] == fakes["okx_main"].ccxt_config()["urls"]
    binance = out.exchanges["binance"]
    assert binance.secret is not None and binance.secret.reveal() == fakes["binance"].secret
    assert binance.password is None
    assert out.trading.dry_run is False and out.state_dir == Path("/tmp/x")
    assert out.health.enabled is False and not out.alerts.telegram and out.ha is None
    assert out.source == "user.yaml"
    assert config.trading.dry_run is True and config.feed.url == "wss://cryptolisting.ws"
    assert config.exchanges["binance"].secret is not None
    assert config.exchanges["binance"].secret.reveal() == "real-binance-secret"


def test_an_account_on_a_venue_without_a_fake_is_one_clear_error() -> None:
    """An account on a venue no fake stands in for: a ConfigError naming the account and the venues
    that can be rehearsed (exit 78 from the CLI), before anything starts."""
    with pytest.raises(ConfigError, match=r"exchanges\.kraken_1: no local fake of kraken .*binance, bybit"):
        make_fake("kraken_1", "kraken", ("spot",))


def test_on_a_terminal_the_prompt_comes_back_after_the_orders(tmp_path: Path, busy_port: int) -> None:
    """stdin and stdout a terminal: a `rehearse>` prompt; the typed announcement's order row is shown
    before the next prompt (not after it); the log's info lines are not shown; Ctrl-D ends it, exit 0."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "rehearse", "-c", str(user_config(tmp_path, busy_port))],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TERM": "dumb"},
    )
    os.close(slave)
    screen = b""

    def read_until(marker: bytes) -> bytes:
        nonlocal screen
        start = len(screen)
        while marker not in screen[start:]:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, f"no {marker!r} within 60 s: {screen.decode(errors='replace')[-2000:]}"
            screen += os.read(master, 65536)
        return screen[start:]

    try:
        assert BANNER.encode() in read_until(b"rehearse> ")
        os.write(master, b"ABC upbit\n")
        shown = read_until(b"rehearse> ").decode(errors="replace")
        os.write(master, b"\x04")  # Ctrl-D
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    rows = [line for line in shown.splitlines() if "ABC/USDT" in line]
    assert len(rows) == 1 and "placed: filled" in rows[0]
    assert shown.index("ABC/USDT") < shown.rindex("rehearse> ")
    assert "daemon.starting" not in screen.decode(errors="replace")
