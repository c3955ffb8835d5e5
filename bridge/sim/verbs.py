"""The test doubles' commands: `bridge emulate` (a local feed, with its key and a `feed:` block to paste),
`bridge emulator-send` (announcements and faults into a running emulator) and `bridge fake-exchange` (a
local fake Binance, with its keys and the block to paste under `exchanges:`). cli.py registers them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bridge.errors import BridgeError, ConfigError, ExitCode

Command = Callable[[asyncio.Event], Coroutine[Any, Any, int]]
Guarded = Callable[[Command], int]  # runs a command until SIGTERM/SIGINT (cli._guarded)

DEFAULT_PORT = 8765
DEFAULT_CONTROL_PORT = 8767
DEFAULT_EXCHANGE_PORT = 8766
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")  # noqa: S104 - recognised, not bound to


def register(sub: Any, guarded: Guarded) -> None:
    """Add the three verbs to the CLI's subparsers; `guarded` runs a long-running command."""
    emu = sub.add_parser(
        "emulate", help="run a local cryptolisting.ws-compatible feed; prints its key and a feed: block"
    )
    emu.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    emu.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="WebSocket port; 0: any free one (default: %(default)s)",
    )
    emu.add_argument("--key", action="append", help="accepted API key (repeatable; default: the demo key)")
    emu.add_argument(
        "--heartbeat",
        type=_positive,
        default=30.0,
        help="seconds between JSON heartbeats (default: %(default)s)",
    )
    emu.add_argument(
        "--ping", type=_positive, default=15.0, help="seconds between WebSocket PINGs (default: %(default)s)"
    )
    emu.add_argument(
        "--pong-timeout",
        type=_positive,
        default=30.0,
        help="seconds without a PONG before a client is closed (default: %(default)s)",
    )
    emu.add_argument(
        "--cooldown",
        type=_non_negative,
        default=5.0,
        help="per-key reconnect cooldown, seconds (default: %(default)s)",
    )
    emu.add_argument("--script", type=Path, help="stream file (JSONL) of messages to send to each client")
    emu.add_argument(
        "--control-port",
        type=_port,
        default=DEFAULT_CONTROL_PORT,
        help="port of the control endpoint on 127.0.0.1 that emulator-send talks to; 0: any free one (default: %(default)s)",
    )
    emu.set_defaults(func=_verb("emulate", lambda args: guarded(_emulate_command(args))))

    send = sub.add_parser("emulator-send", help="announce, or inject a fault, into a running emulator")
    send.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_CONTROL_PORT,
        help="the emulator's --control-port (default: %(default)s)",
    )
    send.add_argument(
        "--timeout",
        type=_positive,
        default=10.0,
        help="seconds to wait for the answer (default: %(default)s)",
    )
    actions = send.add_subparsers(metavar="ACTION", dest="action", required=True)
    ann = actions.add_parser("announce", help="announce a listing to the clients subscribed to its publisher")
    ann.add_argument("tickers", help="ticker(s), comma-separated: ABC or ABC,DEF")
    ann.add_argument("publisher", help="who announces it: binance, upbit, bithumb ...")
    ann.add_argument(
        "listing_type",
        nargs="?",
        default="spot_listing",
        help="spot_listing (default), futures_listing, spot_delisting ...",
    )
    ann.add_argument("--title", help="the announcement's title (default: one like the publisher's)")
    ann.add_argument("--test", action="store_true", help="send it as a test_announcement (never traded)")
    close = actions.add_parser("close", help="close every client with a close frame")
    close.add_argument("code", type=int, help="close code, e.g. 1000 (key_expired) or 1008 (too_slow)")
    close.add_argument("reason", nargs="?", default="", help="close reason, e.g. key_expired")
    beats = actions.add_parser("heartbeats", help="stop or resume the JSON heartbeats (PINGs go on)")
    beats.add_argument("state", choices=["stop", "resume"], help="stop or resume")
    actions.add_parser("drop", help="drop every client's TCP connection, without a close frame")
    actions.add_parser("status", help="show the emulator's URL, clients and heartbeat state")
    send.set_defaults(func=_verb("emulator_send", _emulator_send))

    fake = sub.add_parser(
        "fake-exchange", help="run a local fake Binance spot REST API; prints its keys and a ccxt: block"
    )
    fake.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    fake.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_EXCHANGE_PORT,
        help="HTTP port; 0: any free one (default: %(default)s)",
    )
    fake.set_defaults(func=_verb("fake_exchange", lambda args: guarded(_fake_exchange_command(args))))


def _verb(name: str, run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        return run(args)

    command.__name__ = f"_cmd_{name}"  # the CLI names the command by it in a crash report
    return command


# ---- bridge emulate ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmulateSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    keys: tuple[str, ...] = ()  # empty: the demo key
    heartbeat: float = 30.0
    ping: float = 15.0
    pong_timeout: float = 30.0
    cooldown: float = 5.0
    script: Path | None = None
    control_port: int = DEFAULT_CONTROL_PORT


def _emulate_command(args: argparse.Namespace) -> Command:
    from bridge.ops import logs

    logs.configure("info", "auto", stream=sys.stderr)  # stdout: the blocks to paste, nothing else
    settings = EmulateSettings(
        args.host,
        args.port,
        tuple(args.key or ()),
        args.heartbeat,
        args.ping,
        args.pong_timeout,
        args.cooldown,
        args.script,
        args.control_port,
    )
    return lambda stop: serve_emulator(settings, stop, out=sys.stdout)


async def serve_emulator(
    settings: EmulateSettings, stop: asyncio.Event, *, out: TextIO, ready: asyncio.Event | None = None
) -> int:
    """Run an emulator and its control endpoint until `stop`; print what a user needs to point a config
    at them, then set `ready`. A port in use is a ConfigError (one line, exit 78)."""
    from bridge.sim.demo import DEMO_API_KEY
    from bridge.sim.emulator import FeedEmulator, Limits
    from bridge.sim.emulator_control import EmulatorControl

    keys = settings.keys or (DEMO_API_KEY,)
    limits = Limits(ping_interval=settings.ping, pong_timeout=settings.pong_timeout)
    emulator = FeedEmulator(
        api_keys=keys,
        host=settings.host,
        port=settings.port,
        heartbeat_interval=settings.heartbeat,
        cooldown=settings.cooldown,
        script_path=settings.script,
        limits=limits,
    )
    control = EmulatorControl(emulator, port=settings.control_port)
    try:
        await _listen(emulator.start(), "--port", settings.host, settings.port)
        await _listen(control.start(), "--control-port", "127.0.0.1", settings.control_port)
        out.write(emulator_banner(settings, _reachable(emulator.url, settings.host), keys, control.port))
        out.flush()
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await control.stop()
        await emulator.stop()
    return int(ExitCode.OK)


def emulator_banner(settings: EmulateSettings, url: str, keys: tuple[str, ...], control_port: int) -> str:
    feed = [f"  url: {url}", f"  api_key: {keys[0]}"]
    if settings.heartbeat + 5 > 35:  # the daemon's default heartbeat_timeout is 35 s
        feed.append(f"  heartbeat_timeout: {settings.heartbeat + 5:g}")
    if settings.cooldown > 5:  # reconnect.min_delay defaults to 5 s, the real feed's cooldown
        feed.append(f"  reconnect: {{min_delay: {settings.cooldown:g}}}")
    lines = [
        f"Feed emulator: {url}",
        f"API key{'s' if len(keys) > 1 else ''}: {', '.join(keys)} (accepted by this emulator only)",
        f"Control: http://127.0.0.1:{control_port} "
        f"(e.g. bridge emulator-send --port {control_port} announce ABC upbit)",
        "",
        "Paste into config.yaml:",
        "",
        "feed:",
        *feed,
        "",
    ]
    return "\n".join(lines) + "\n"


# ---- bridge emulator-send ------------------------------------------------------------------------


def _emulator_send(args: argparse.Namespace) -> int:
    body: dict[str, Any] | None
    if args.action == "announce":
        path = "/announce"
        body = {"tickers": args.tickers.split(","), "publisher": args.publisher}
        body.update(listing_type=args.listing_type, title=args.title, test=args.test)
        if args.title is None:
            del body["title"]
    elif args.action == "close":
        path, body = "/close", {"code": args.code, "reason": args.reason}
    elif args.action == "heartbeats":
        path, body = "/heartbeats", {"on": args.state == "resume"}
    elif args.action == "drop":
        path, body = "/drop", {}
    else:
        path, body = "/status", None
    answer = asyncio.run(control_request(args.port, path, body, within=args.timeout))
    print(describe(args.action, answer))
    return int(ExitCode.OK)


async def control_request(
    port: int, path: str, body: dict[str, Any] | None, *, within: float = 10.0
) -> dict[str, Any]:
    """One request to an emulator's control endpoint; its answer, or a BridgeError saying what failed."""
    import aiohttp

    url = f"http://127.0.0.1:{port}{path}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as session:
            request = session.get(url) if body is None else session.post(url, json=body)
            async with request as resp:
                answer = await resp.json(content_type=None)
    except aiohttp.ClientConnectionError:
        raise BridgeError(
            f"no emulator control endpoint at http://127.0.0.1:{port} "
            f"(is `bridge emulate --control-port {port}` running?)"
        ) from None
    except TimeoutError:
        raise BridgeError(
            f"the emulator at http://127.0.0.1:{port} did not answer within {within:g} s"
        ) from None
    except ValueError:
        raise BridgeError(
            f"http://127.0.0.1:{port} answered, but not as an emulator control endpoint"
        ) from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else None
        raise BridgeError(f"the emulator refused: {error or answer}")
    return answer


def describe(action: str, answer: dict[str, Any]) -> str:
    """One line for a person about what the emulator did."""
    if action == "announce":
        m = answer["message"]
        return f"announced {m['ticker']} ({m['publisher']} {m['listingType']}, {m['title']!r}) to {answer['reached']} client(s)"
    if action == "close":
        return f"closed {answer['clients']} client(s) with {answer['code']} {answer['reason']}".rstrip()
    if action == "heartbeats":
        return "heartbeats resumed" if answer["heartbeats"] else "heartbeats stopped (PINGs go on)"
    if action == "drop":
        return f"dropped {answer['clients']} client(s), no close frame"
    beats = "on" if answer["heartbeats"] else "stopped"
    return f"{answer['url']}: {answer['clients']} client(s), {answer['connections']} connection(s) so far, heartbeats {beats}"


# ---- bridge fake-exchange ------------------------------------------------------------------------


def _fake_exchange_command(args: argparse.Namespace) -> Command:
    from bridge.ops import logs

    logs.configure("info", "auto", stream=sys.stderr)
    return lambda stop: serve_fake_exchange(args.host, args.port, stop, out=sys.stdout)


async def serve_fake_exchange(
    host: str, port: int, stop: asyncio.Event, *, out: TextIO, ready: asyncio.Event | None = None
) -> int:
    """Run a fake Binance until `stop`; print its keys and the config block pointing ccxt at it."""
    from bridge.sim.fake_exchange import FakeBinance

    fake = FakeBinance(host=host, port=port)
    try:
        await _listen(fake.start(), "--port", host, port)
        url, ccxt = _reachable(fake.url, host), fake.ccxt_config()
        if url != fake.url:
            ccxt = _rebase(ccxt, url)
        out.write(fake_exchange_banner(fake.api_key, fake.secret, ccxt, url))
        out.flush()
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await fake.stop()
    return int(ExitCode.OK)


def fake_exchange_banner(api_key: str, secret: str, ccxt: dict[str, Any], url: str) -> str:
    import yaml

    block = {"exchanges": {"binance": {"api_key": api_key, "secret": secret, "ccxt": ccxt}}}
    return (
        f"Fake Binance (spot REST API): {url}\n"
        f"API key: {api_key}\nSecret: {secret} (accepted by this fake only)\n\n"
        "Paste into config.yaml (or the lines under `binance:` into your exchanges.binance); every\n"
        "ccxt request then goes to the fake, none to the real exchange:\n\n"
        + yaml.safe_dump(block, sort_keys=False, default_flow_style=False)
        + "\n"
    )


# ---- helpers -------------------------------------------------------------------------------------


async def _listen(start: Coroutine[Any, Any, None], option: str, host: str, port: int) -> None:
    try:
        await start
    except OSError as exc:
        raise ConfigError(f"{option} {port}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _reachable(url: str, host: str) -> str:
    """The server's URL as a client on this machine reaches it (a wildcard address is not one)."""
    if host not in _WILDCARD_HOSTS:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://127.0.0.1:{rest.rsplit(':', 1)[1]}"


def _rebase(ccxt: dict[str, Any], url: str) -> dict[str, Any]:
    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, str) and "://" in value:
            path = "/" + value.split("://", 1)[1].split("/", 1)[1]
            return url + path
        return value

    return {k: swap(v) for k, v in ccxt.items()}


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0-65535, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value
