"""Processes the latency benchmark runs: the real daemon (`python -m bridge run`) with a generated
config, and the floor client. Each is its own OS process, like in production."""

from __future__ import annotations

import asyncio
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

from bridge.sim.emulator import FeedEmulator
from bridge.sim.fake_exchange import FakeBinance

REPO = Path(__file__).resolve().parent.parent
STRATEGIES = REPO / "strategies"
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class StrategySpec:
    name: str
    module: str  # file name in strategies/
    params: dict[str, Any] = field(default_factory=dict)


def daemon_config(
    *,
    emu: FeedEmulator | None = None,
    fake: FakeBinance,
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
) -> str:
    """A live-trading config against the local servers. JSON is YAML, so nested values are dumped. The
    feed: `emu`'s url, or `feed_url`, or `links` (name -> url: `feed.links`, the key and `cex` shared)."""
    ccxt = {**fake.ccxt_config(), **ccxt_extra}
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
        "  binance:",
        f"    api_key: {fake.api_key}",
        f"    secret: {fake.secret}",
        f"    ccxt: {json.dumps(ccxt)}",
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
    for s in strategies:
        lines.append(f"  - name: {s.name}")
        lines.append(f"    module: {STRATEGIES / s.module}")
        if s.params:
            lines.append(f"    params: {json.dumps(s.params)}")
    return "\n".join(lines) + "\n"


@dataclass
class Proc:
    """A child process whose output goes to a file (a pipe could fill up and stall it)."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    launched_at: float  # time.perf_counter() right before the spawn

    @classmethod
    async def spawn(cls, name: str, args: list[str], log_path: Path) -> Proc:
        out = log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        launched = time.perf_counter()
        try:
            process = await asyncio.create_subprocess_exec(
                *args, stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=REPO, env=env
            )
        finally:
            out.close()  # the child holds its own descriptor
        return cls(name, process, log_path, launched)

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
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode


async def spawn_daemon(name: str, config_text: str, workdir: Path) -> Proc:
    path = workdir / f"{name}.yaml"
    path.write_text(config_text)
    return await Proc.spawn(
        name, [sys.executable, "-m", "bridge", "run", "-c", str(path)], workdir / f"{name}.log"
    )


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
