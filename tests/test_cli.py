"""The daemon as a user runs it: `python -m bridge run` in its own process, stopped by a signal or
by the feed, with the documented exit codes and no traceback or unclosed-session warning."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from bridge.sim.emulator import FeedEmulator

KEY = "dsk_" + "b" * 64
STRATEGIES = Path(__file__).resolve().parent.parent / "strategies"


def write_config(tmp_path: Path, emu: FeedEmulator, key: str = "${FEED_KEY}") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
feed:
  url: {emu.url}
  api_key: {key}
  reconnect: {{min_delay: 0.05, max_delay: 0.1}}
state_dir: {tmp_path / "state"}
strategies:
  - {{name: log_only, module: {STRATEGIES}/log_only.py}}
log: {{level: info, format: json}}
"""
    )
    return path


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, object]] = []

    async def wait_event(self, name: str) -> dict[str, object]:
        """Read the daemon's JSON log lines until event `name` appears."""
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"process ended before {name}: {self.events[-5:]}")
            event = orjson.loads(line)
            self.events.append(event)
            if event.get("event") == name:
                return event

    async def finish(self, limit: float = 5.0) -> tuple[int, str, str]:
        out, err = await asyncio.wait_for(self.proc.communicate(), limit)
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def emu() -> AsyncIterator[FeedEmulator]:
    async with FeedEmulator(api_keys={KEY}, heartbeat_interval=1.0) as e:
        yield e


async def spawn(config: Path, key: str = KEY) -> Proc:
    env = {**os.environ, "FEED_KEY": key}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    return Proc(proc)


async def test_sigterm_stops_cleanly_within_5s(emu: FeedEmulator, tmp_path: Path) -> None:
    """SIGTERM: trading halted, socket and sessions closed, exit 0 within 5 s, nothing on stderr."""
    p = await spawn(write_config(tmp_path, emu))
    await asyncio.wait_for(p.wait_event("trading.resumed"), 30)
    sent = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    code, out, err = await p.finish(5.0)
    assert code == 0
    assert time.monotonic() - sent < 5
    assert "Unclosed" not in out + err and "Traceback" not in out + err
    assert '"daemon.stopping"' in out and '"shutting_down"' in out


async def test_key_expired_close_exits_77(emu: FeedEmulator, tmp_path: Path) -> None:
    """A Close(1000, key_expired) halts trading and exits 77 without reconnecting."""
    p = await spawn(write_config(tmp_path, emu))
    await asyncio.wait_for(p.wait_event("trading.resumed"), 30)
    await emu.close_all(1000, "key_expired")
    code, out, err = await p.finish(10.0)
    assert code == 77
    assert emu.connections == 1
    assert '"key_expired"' in out
    assert "Traceback" not in out + err


async def test_unknown_key_exits_77_and_never_logs_it(emu: FeedEmulator, tmp_path: Path) -> None:
    """A key the feed rejects (403) exits 77 at once, and the key appears nowhere in the output."""
    bad = "dsk_" + "c" * 64
    p = await spawn(write_config(tmp_path, emu), key=bad)
    code, out, err = await p.finish(30.0)
    assert code == 77
    assert len(emu.handshakes) == 1
    assert bad not in out + err
    assert "Traceback" not in out + err


@pytest.mark.parametrize(("secret_ok", "code"), [(True, 0), (False, 77)])
async def test_check_config_connect_checks_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secret_ok: bool, code: int
) -> None:
    """`check-config --connect` reaches the exchange: OK with good keys, exit 77 when they are rejected."""
    from bridge import cli
    from bridge.sim.fake_exchange import FakeBinance

    async with FakeBinance() as fake:
        path = tmp_path / "config.yaml"
        secret = fake.secret if secret_ok else "wrong-secret-123456"
        path.write_text(
            f"""
feed: {{url: "ws://127.0.0.1:1", api_key: {KEY}}}
trading: {{dry_run: false}}
exchanges:
  binance:
    api_key: {fake.api_key}
    secret: {secret}
    ccxt: {orjson.dumps(fake.ccxt_config()).decode()}
"""
        )
        result = await asyncio.to_thread(cli.main, ["check-config", "-c", str(path), "--connect"])
    out = capsys.readouterr().out
    assert result == code
    assert ("binance: OK" in out) is secret_ok
    assert "wrong-secret-123456" not in out


async def test_record_command_writes_frames_until_sigterm(emu: FeedEmulator, tmp_path: Path) -> None:
    """`bridge record --out FILE` holds the feed, records every frame with its receipt time, and on
    SIGTERM flushes, exits 0, and leaves a file that replay reads."""
    from bridge.replay import read_stream

    out = tmp_path / "rec.jsonl"
    env = {**os.environ, "FEED_KEY": KEY}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "record",
        "--out",
        str(out),
        "-c",
        str(write_config(tmp_path, emu)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    p = Proc(proc)
    await asyncio.wait_for(p.wait_event("feed.connected"), 30)
    await emu.announce(title="Binance Will List REC", ticker="REC")
    await asyncio.wait_for(p.wait_event("announcement.received"), 10)
    proc.send_signal(signal.SIGTERM)
    code, _, err = await p.finish(5.0)
    assert code == 0, err
    stream = read_stream(out)
    frames = [orjson.loads(e.frame) for e in stream.events if e.frame]
    assert [f["type"] for f in frames][:1] == ["welcome"]
    assert any(f.get("ticker") == "REC" for f in frames)
    assert all(e.t_ns > 0 for e in stream.events)


def test_check_config_scrubs_what_a_plugin_logs_and_warns_at_import(tmp_path: Path) -> None:
    """`python -m bridge check-config` in a fresh process: a plugin that logs and warns at import,
    quoting a secret from the config, before the command configures logging. Both lines come out
    on stderr through the scrubber; stdout holds only the OK line."""
    key = "dsk_" + os.urandom(16).hex()
    plugin = tmp_path / "chatty.py"
    plugin.write_text(
        "import os, warnings\n"
        "import structlog\n"
        "from bridge import Strategy\n"
        "structlog.get_logger('chatty').warning('chatty.loaded', key=os.environ['FEED_KEY'])\n"
        "warnings.warn('chatty uses ' + os.environ['FEED_KEY'], UserWarning, stacklevel=1)\n"
        "class Chatty(Strategy):\n"
        "    pass\n"
    )
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f'feed: {{url: "ws://127.0.0.1:1", api_key: "${{FEED_KEY}}"}}\n'
        f"strategies: [{{name: chatty, module: {plugin}}}]\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "FEED_KEY": key},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"PAPER (dry_run: true, no real orders): {cfg}: OK (1 strategies: chatty)\n"
    events = [orjson.loads(line) for line in done.stderr.splitlines()]
    assert (events[0]["event"], events[0]["key"]) == ("chatty.loaded", "***")
    assert any("chatty uses ***" in str(e["event"]) for e in events)
    assert key not in done.stdout + done.stderr


async def test_a_config_error_found_at_run_time_names_the_file(emu: FeedEmulator, tmp_path: Path) -> None:
    """A state_dir that cannot be created is found only when the daemon starts: exit 78, one line on
    stderr naming the config file and the key, no traceback."""
    path = write_config(tmp_path, emu)
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state_dir should be")
    p = await spawn(path)
    code, out, err = await p.finish(30.0)
    assert code == 78
    assert f"bridge: {path}: state_dir: " in err and "Traceback" not in out + err
