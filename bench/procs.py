"""Processes the latency benchmark runs: the real daemon (`python -m bridge run`) with a generated
config, and the floor client. Each is its own OS process, like in production."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance, FakeVenue

REPO = Path(__file__).resolve().parent.parent
STRATEGIES = REPO / "strategies"
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class StrategySpec:
    name: str
    module: str  # file name in strategies/
    params: dict[str, Any] = field(default_factory=dict)


def exchange_entry(
    fake: FakeVenue, ccxt_extra: Mapping[str, Any] | None = None, **more: Any
) -> dict[str, Any]:
    """One `exchanges:` entry for an account on `fake` (any of bridge/sim's fakes): its key, secret,
    OKX's passphrase, and ccxt's urls pointed at it; `more` adds keys (markets_refresh, venue...)."""
    entry: dict[str, Any] = {"api_key": fake.api_key, "secret": fake.secret}
    passphrase = getattr(fake, "passphrase", None)
    if passphrase is not None:
        entry["password"] = passphrase
    entry["ccxt"] = {**fake.ccxt_config(), **(ccxt_extra or {})}
    return {**entry, **more}


def daemon_config(
    *,
    emu: FeedEmulator | None = None,
    fake: FakeBinance | None = None,
    feed_key: str,
    state_dir: Path,
    strategies: list[StrategySpec],
    ccxt_extra: dict[str, Any],
    max_event_age: float = 10.0,
    health_port: int | None = None,
    trading_extra: dict[str, Any] | None = None,
    feed_url: str | None = None,
    links: Mapping[str, str] | None = None,
    cex: Sequence[str] = ("binance", "upbit"),
    exchanges: Mapping[str, Mapping[str, Any]] | None = None,
    runtime: Mapping[str, Any] | None = None,
) -> str:
    """A live-trading config against the local servers. JSON is YAML, so nested values are dumped. The
    feed: `emu`'s url, or `feed_url`, or `links` (name -> url: `feed.links`, the key and `cex` shared).
    The accounts: `exchanges` (name -> entry, see exchange_entry), or one `binance` on `fake` with
    `ccxt_extra`. `runtime`: the config's runtime section (event_loop)."""
    if exchanges is None:
        if fake is None:
            raise ValueError("daemon_config needs fake or exchanges")
        exchanges = {"binance": exchange_entry(fake, ccxt_extra)}
    if links:
        where = ["  links:"] + [
            f"    - {json.dumps({'name': name, 'url': url})}" for name, url in links.items()
        ]
    else:
        url = feed_url if feed_url is not None else emu.url if emu is not None else None
        if url is None:
            raise ValueError("daemon_config needs emu, feed_url or links")
        where = [f"  url: {url}"]
    lines = [
        "feed:",
        *where,
        f"  api_key: {feed_key}",
        f"  cex: [{', '.join(cex)}]",
        "  heartbeat_timeout: 35",
        "  reconnect: {min_delay: 0.1, max_delay: 1}",
        "exchanges:",
        *(f"  {name}: {json.dumps(entry)}" for name, entry in exchanges.items()),
        "trading: "
        + json.dumps(
            {
                "dry_run": False,
                "max_event_age": max_event_age,
                "max_order_cost": 100,
                "daily_max_cost": None,
                **(trading_extra or {}),
            }
        ),
        f"state_dir: {state_dir}",
        "log: {level: info, format: json}",
        "strategies:",
    ]
    if health_port is not None:
        lines.insert(-1, f"health: {{enabled: true, port: {health_port}, status_interval: 0}}")
    if runtime:
        lines.insert(-1, f"runtime: {json.dumps(dict(runtime))}")
    for s in strategies:
        lines.append(f"  - name: {s.name}")
        lines.append(f"    module: {STRATEGIES / s.module}")
        if s.params:
            lines.append(f"    params: {json.dumps(s.params)}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SlowPipe:
    """A child's stdout as a small pipe read slowly: `chunk` bytes, then `delay_s` idle (a slow journald
    or log shipper). The pipe holds `capacity` bytes (Linux F_SETPIPE_SZ; one page at least) and the
    reader buffers at most about two chunks, so once the child writes faster than `chunk / delay_s` its
    writes block, as on a real pipe whose reader is behind. What is read goes to the log file."""

    chunk: int = 512
    delay_s: float = 0.5
    capacity: int = 4096


@dataclass
class Proc:
    """A child process whose output goes to a file (a pipe could fill up and stall it), or with
    `slow_pipe` to a pipe this process reads slowly."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    launched_at: float  # time.perf_counter() right before the spawn
    reader: asyncio.Task[None] | None = None  # the slow pipe's reader, if any
    piped_bytes: int = 0  # read from the slow pipe so far
    stopping: bool = False  # stop() was called: the slow pipe is drained at full speed

    @classmethod
    async def spawn(
        cls, name: str, args: list[str], log_path: Path, slow_pipe: SlowPipe | None = None
    ) -> Proc:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if slow_pipe is None:
            out = log_path.open("wb")
        else:
            read_fd, write_fd = os.pipe()
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, slow_pipe.capacity)
            out = os.fdopen(write_fd, "wb")
        launched = time.perf_counter()
        try:
            process = await asyncio.create_subprocess_exec(
                *args, stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=REPO, env=env
            )
        finally:
            out.close()  # the child holds its own descriptor
        proc = cls(name, process, log_path, launched)
        if slow_pipe is not None:
            # A StreamReader pauses reading the pipe once it holds 2 x limit bytes: a small limit keeps
            # the backlog in the pipe, where the child feels it, not in this process's memory.
            stream = asyncio.StreamReader(limit=slow_pipe.chunk)
            loop = asyncio.get_running_loop()
            await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(read_fd, "rb")
            )
            proc.reader = asyncio.create_task(proc._drain_slowly(stream, slow_pipe), name=f"{name}-slow-pipe")
        return proc

    async def _drain_slowly(self, stream: asyncio.StreamReader, pipe: SlowPipe) -> None:
        with self.log_path.open("wb") as out:
            while data := await stream.read(pipe.chunk):
                out.write(data)
                self.piped_bytes += len(data)
                if not self.stopping:
                    await asyncio.sleep(pipe.delay_s)  # the slowness itself: a reader that falls behind

    @property
    def pid(self) -> int:
        return self.process.pid

    def memory_kib(self) -> tuple[int, int]:
        """(current RSS, peak RSS) in KiB, from /proc (Linux)."""
        values = {"VmRSS": 0, "VmHWM": 0}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
        return values["VmRSS"], values["VmHWM"]

    def check_alive(self) -> None:
        if self.process.returncode is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}; log tail:\n{tail}")

    async def stop(self) -> int | None:
        self.stopping = True  # the child's last lines are read at once: its shutdown is not measured
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.reader), STOP_TIMEOUT_S)
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        return self.process.returncode


async def spawn_daemon(name: str, config_text: str, workdir: Path, slow_pipe: SlowPipe | None = None) -> Proc:
    path = workdir / f"{name}.yaml"
    path.write_text(config_text)
    return await Proc.spawn(
        name, [sys.executable, "-m", "bridge", "run", "-c", str(path)], workdir / f"{name}.log", slow_pipe
    )


async def spawn_venue_floor(
    name: str, emu: FeedEmulator, feed_key: str, fakes: Mapping[str, FakeVenue], workdir: Path
) -> Proc:
    """bench/floor_venues.py on `fakes` (venue -> fake), one order per venue per ticker, in that order."""
    venues = [
        {
            "venue": venue,
            "url": fake.url,
            "api_key": fake.api_key,
            "secret": fake.secret,
            "passphrase": getattr(fake, "passphrase", None),
        }
        for venue, fake in fakes.items()
    ]
    args = [
        sys.executable,
        str(REPO / "bench" / "floor_venues.py"),
        "--ws",
        emu.url,
        "--feed-key",
        feed_key,
        "--venues",
        json.dumps(venues),
    ]
    return await Proc.spawn(name, args, workdir / f"{name}.log")


async def spawn_floor(emu: FeedEmulator, fake: FakeBinance, feed_key: str, workdir: Path) -> Proc:
    args = [
        sys.executable,
        str(REPO / "bench" / "floor.py"),
        "--ws",
        emu.url,
        "--feed-key",
        feed_key,
        "--rest",
        fake.url,
        "--api-key",
        fake.api_key,
        "--secret",
        fake.secret,
    ]
    return await Proc.spawn("floor", args, workdir / "floor.log")


def free_port() -> int:
    """A currently free loopback port (it could be taken before use; fine for a benchmark)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def read_events(log_path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """JSON log lines written since byte `offset`; returns them and the new offset (whole lines only)."""
    with log_path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            events.append(obj)
    return events, offset + end


async def scrape(url: str, timeout_s: float = 10.0) -> str:
    """GET `url` (a daemon's /metrics or /health) and return the body text."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
        http.get(url) as resp,
    ):
        resp.raise_for_status()
        return await resp.text()
