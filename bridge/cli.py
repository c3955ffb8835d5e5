"""Command line: `bridge run | positions | close | check-config | replay | ...` (`bridge -h`: all).

Every user mistake ends as one line on stderr and a documented exit code (0 ok, 1 unexpected,
77 credentials rejected, 78 configuration error); never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog

from bridge import config as config_mod
from bridge import config_check, secrets
from bridge.errors import BridgeError, ConfigError, ExitCode
from bridge.ops import console, logs
from bridge.sim import rehearse as sim_rehearse
from bridge.sim import verbs as sim_verbs

log = structlog.get_logger(__name__)

DEFAULT_CONFIG = os.environ.get("BRIDGE_CONFIG", "config.yaml")
_FATAL_LOGGED: list[BaseException] = []  # fatal errors already in the log as `daemon.fatal`
CONFIG_HELP = "config file (default: %(default)s)"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return int(ExitCode.CONFIG)
    # Until a command configures logging its own way: warnings only, on stderr, through the scrubber.
    # Config loading and plugin imports run before that, and may log or warn (a plugin quoting its
    # params); without this, those lines would go out raw (structlog's default printer, or stderr).
    logs.configure("warning", "auto", stream=sys.stderr)
    # Every exit writes out the log lines still queued (logs.flush) first, then the one-line reason.
    try:
        code: int = args.func(args)
    except BridgeError as exc:
        logs.flush()
        # Once (console.print_fatal): scrubbed, a plugin's error may quote a secret the config gave it.
        console.print_fatal(str(exc), int(exc.exit_code), logged=exc in _FATAL_LOGGED)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        logs.flush()
        return int(ExitCode.OK)
    except Exception as exc:
        # A bug, not a user mistake: the traceback goes to the log, scrubbed like every log line (the
        # interpreter would print it raw), and stderr gets one scrubbed line.
        log.exception("cli.crashed", command=args.func.__name__.removeprefix("_cmd_"))
        logs.flush()
        reason = secrets.scrub(f"{type(exc).__name__}: {exc}")
        console.print_fatal(f"unexpected error: {reason} (traceback in the log)", 1, logged=True)
        return int(ExitCode.FAILURE)
    logs.flush()
    return code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bridge", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon with a config file")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    run.add_argument("--record", type=Path, help="also record every feed frame to this JSONL file")
    _recording_options(run)
    run.set_defaults(func=_cmd_run)

    rec = sub.add_parser("record", help="hold the feed and record every frame for replay (no trading)")
    rec.add_argument("--out", type=Path, required=True, help="JSONL file to write (rotated)")
    rec.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    rec.add_argument(
        "--markets", action="store_true", help="first snapshot the configured exchanges' markets and prices"
    )
    _recording_options(rec)
    rec.set_defaults(func=_cmd_record)

    pos = sub.add_parser(
        "positions", help="list the open positions and their exit plans from the journal (read-only)"
    )
    pos.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    pos.add_argument("--json", action="store_true", help="print a JSON list, for scripts")
    pos.set_defaults(func=_cmd_positions)

    rpt = sub.add_parser(
        "report", help="orders, fills, fees and realised profit per strategy and venue, from the journals"
    )
    rpt.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    rpt.add_argument(
        "--since", help="only orders from this UTC date or time on (2026-12-01, 2026-12-01T08:00)"
    )
    rpt.add_argument("--json", action="store_true", help="JSON even on a terminal (the default without one)")
    rpt.set_defaults(func=_cmd_report)

    close = sub.add_parser("close", help="ask the running daemon to sell a position now")
    close.add_argument("symbol", help="the position's symbol, as `positions` shows it, e.g. ABC/USDT")
    close.add_argument("--exchange", help="the position's exchange (needed only if several hold SYMBOL)")
    close.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    close.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the daemon's answer (default: 30)"
    )
    close.set_defaults(func=_cmd_close)

    resume = sub.add_parser(
        "resume",
        help="ask the running daemon to lift a halt that waits for a human (loss_limit, operator_halt)",
    )
    resume.add_argument("reason", choices=["loss_limit", "operator_halt"], help="the halt reason to lift")
    resume.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    resume.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the daemon's answer")
    resume.set_defaults(func=_cmd_resume)

    halt = sub.add_parser(
        "halt", help="ask the running daemon to stop new entries until `resume operator_halt`"
    )
    halt.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    halt.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the daemon's answer")
    halt.set_defaults(func=lambda args: _ask_daemon(args, {"cmd": "halt", "by": "bridge halt"}, "halted"))

    reload = sub.add_parser(
        "reload", help="ask the running daemon to re-read its config (as systemctl reload)"
    )
    reload.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
    reload.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the daemon's answer")
    reload.set_defaults(func=lambda args: _ask_daemon(args, {"cmd": "reload"}, "reloaded"))

    demo = sub.add_parser(
        "demo", help="run the whole path offline: local feed emulator + local fake exchange, paper trading"
    )
    demo.add_argument("--forever", action="store_true", help="keep running after the scripted announcements")
    demo.add_argument("-v", "--verbose", action="store_true", help=console.VERBOSE_HELP)
    demo.set_defaults(func=_cmd_demo)

    check = sub.add_parser("check-config", help="validate the config and load the strategies")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    check.add_argument(
        "--connect", action="store_true", help="also connect to the exchanges: keys, clock and markets"
    )
    check.set_defaults(func=_cmd_check_config)

    show = sub.add_parser("show-config", help="print the effective config with secrets redacted")
    show.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    show.set_defaults(func=_cmd_show_config)

    sim_verbs.register(sub, _guarded)  # emulate, emulator-send, fake-exchange (bridge/sim/verbs.py)
    sim_rehearse.register(sub, _guarded, DEFAULT_CONFIG)  # rehearse (bridge/sim/rehearse.py)

    rep = sub.add_parser(
        "replay", help="replay a recorded or hand-written stream through the strategies (paper)"
    )
    rep.add_argument("stream", type=Path, help="JSONL stream file (see examples/streams/)")
    rep.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config with the strategies to replay")
    rep.add_argument(
        "--speed",
        default="max",
        help="'max' (default: as fast as possible) or a factor, e.g. 1 for real time",
    )
    rep.add_argument("-v", "--verbose", action="store_true", help=console.VERBOSE_HELP)
    rep.set_defaults(func=_cmd_replay)

    new = sub.add_parser("new-strategy", help="write a commented template strategy and its test")
    new.add_argument("name", help="lowercase name, e.g. my_listing_play")
    new.add_argument("--dir", type=Path, default=Path("strategies"), help="where the plugin goes")
    new.add_argument("--tests", type=Path, default=Path("tests"), help="where its test goes")
    new.set_defaults(func=_cmd_new_strategy)

    lst = sub.add_parser("list-strategies", help="show which strategies the config loads, and from where")
    lst.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    lst.set_defaults(func=_cmd_list_strategies)

    return p


def _recording_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-mb", type=float, default=100.0, help="rotate the recording at this size")
    p.add_argument("--keep", type=int, default=5, help="rotated recordings to keep")


Command = Callable[[asyncio.Event], Coroutine[Any, Any, int]]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _run_async(command: Command, loop_factory: LoopFactory | None = None) -> int:
    """Run `command(stop)` with SIGTERM/SIGINT setting `stop`; a second signal forces exit at once.
    `loop_factory`: the event loop to run on (None: asyncio's own)."""

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                log.warning("daemon.force_exit", signal=signal.Signals(signum).name)
                logs.flush(timeout=1.0)  # os._exit skips every exit hook; a stuck output gets 1 s
                os._exit(int(ExitCode.FAILURE))
            log.info("daemon.signal", signal=signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        return await command(stop)

    with asyncio.Runner(loop_factory=loop_factory) as runner_:
        return runner_.run(runner())


def _loop_factory(config: config_mod.Config) -> LoopFactory | None:
    """The event loop `runtime.event_loop` asks for: None for asyncio's own, uvloop's if installed."""
    if config.runtime.event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        raise ConfigError(
            f"{config.source}: runtime.event_loop: uvloop is not installed (pip install uvloop)"
        ) from None
    return uvloop.new_event_loop


def _load(path: str) -> config_mod.Config:
    config = config_mod.load(path)
    logs.configure(config.log.level, config.log.format)
    return config


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    from bridge.daemon import Daemon

    recorder = None
    if args.record is not None:
        from bridge.feed.recorder import Recorder

        recorder = Recorder(args.record, max_bytes=int(args.max_mb * 1024 * 1024), keep=args.keep)

    async def go(stop: asyncio.Event) -> int:
        # Loads the strategies: a plugin mistake is a config error, before any I/O.
        daemon = Daemon(config, recorder=recorder, settle_heap=True)
        # `systemctl reload` (SIGHUP): re-read the config; without a handler Python would die of it.
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, daemon.request_reload)
        # The mistakes check-config refuses, refused.
        for warning in config_check.lint_lines(config, daemon.strategies):
            log.warning("config.warning", problem=warning)
        waiter = asyncio.create_task(stop.wait())
        waiter.add_done_callback(lambda _: daemon.request_stop())
        try:
            await daemon.run()
        except ConfigError as exc:
            # A config problem found at run time (state_dir not writable, a port in use) names the
            # file too, like every config error found at load.
            if str(exc).startswith(f"{config.source}: "):
                raise
            raise ConfigError(f"{config.source}: {exc}") from None
        finally:
            waiter.cancel()
        return int(ExitCode.OK)

    return _guarded(go, _loop_factory(config))


def _guarded(command: Command, loop_factory: LoopFactory | None = None) -> int:
    try:
        return _run_async(command, loop_factory)
    except BridgeError as exc:
        # No traceback: a fatal condition the daemon understood (config, key) is one clear line; in the
        # log too when a machine reads it (on a terminal, the line main prints is the one).
        if console.log_fatal_too():
            log.error("daemon.fatal", error=str(exc), exit_code=int(exc.exit_code))  # noqa: TRY400
            _FATAL_LOGGED.append(exc)
        raise
    except Exception:
        log.exception("daemon.crashed")
        return int(ExitCode.FAILURE)


def _cmd_demo(args: argparse.Namespace) -> int:
    from bridge.sim.demo import run_demo

    out = console.setup(verbose=args.verbose)
    return _guarded(lambda stop: run_demo(stop_event=stop, forever=args.forever, out=out.human))


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = config_mod.load(args.config)
    from bridge.trading.plugins import load_strategies

    strategies = load_strategies(config)
    for warning in config_check.lint_lines(config, strategies):
        print(f"bridge: warning: {secrets.scrub(warning)}", file=sys.stderr)
    names = ", ".join(s.name for s in strategies) or "none"
    print(f"{config_check.mode(config)}: {config.source}: OK ({len(strategies)} strategies: {names})")
    if args.connect:
        # Written at once, not by the writer thread: its answers are printed to the same stdout.
        logs.configure(config.log.level, config.log.format, background=False)
        return asyncio.run(config_check.check_exchanges(config))
    return int(ExitCode.OK)


def _cmd_record(args: argparse.Namespace) -> int:
    from bridge.system import record

    config = _load(args.config)

    async def go(stop: asyncio.Event) -> int:
        await record(
            config,
            args.out,
            stop=stop,
            max_bytes=int(args.max_mb * 1024 * 1024),
            keep=args.keep,
            markets=args.markets,
        )
        return int(ExitCode.OK)

    return _guarded(go)


def _cmd_replay(args: argparse.Namespace) -> int:
    from bridge.replay import replay

    config = config_mod.load(args.config, offline=True)
    out = console.setup(verbose=args.verbose, table=False)  # its table is on the file's clock, at the end
    speed: float | None = None
    if args.speed != "max":
        try:
            speed = float(args.speed)
        except ValueError:
            speed = 0.0
        if not speed > 0:
            raise ConfigError(f"--speed: expected 'max' or a positive number, got {args.speed!r}")
    report = asyncio.run(replay(args.stream, config, speed=speed))
    logs.flush()
    print(report.render(), file=out.human)
    return int(ExitCode.OK)


def _cmd_new_strategy(args: argparse.Namespace) -> int:
    from bridge.templates import new_strategy

    plugin, test = new_strategy(args.name, args.dir, args.tests)
    print(f"wrote {plugin} and {test}")
    print(f"add to the config:  - {{name: {args.name}, module: {plugin}, params: {{cost: 10}}}}")
    print(f"run its test:       .venv/bin/python -m pytest {test}")
    return int(ExitCode.OK)


def _cmd_list_strategies(args: argparse.Namespace) -> int:
    import inspect

    from bridge.trading.plugins import load_strategy

    config = config_mod.load(args.config, offline=True)
    for spec in config.strategies:
        if not spec.enabled:
            print(f"{spec.name}: disabled ({spec.module})")
            continue
        strategy = load_strategy(spec, config.source)
        cls = type(strategy)
        where = inspect.getsourcefile(cls) or spec.module
        print(f"{spec.name}: {cls.__name__} from {where}")
        print(f"    params: {secrets.scrub(repr(strategy.params))}")  # a param may be a secret
    if not config.strategies:
        print("no strategies configured")
    return int(ExitCode.OK)


def _quiet_logs() -> None:
    """Read-only tools: only warnings, on stderr, so stdout holds nothing but the answer."""
    logs.configure("warning", "console" if sys.stderr.isatty() else "json", stream=sys.stderr)


def _cmd_positions(args: argparse.Namespace) -> int:
    import time

    from bridge.ops import positions_report as positions

    config = config_mod.load(args.config, offline=True)  # no secret needed to read the journal
    _quiet_logs()
    found = positions.read_positions(config.state_dir, dry_run=config.trading.dry_run)
    now_ns = time.time_ns()
    if args.json:
        print(positions.to_json(found, now_ns=now_ns))
    elif not found:
        print(positions.NO_POSITIONS)
    else:
        print(positions.render_table(found, now_ns=now_ns))
    return int(ExitCode.OK)


def _cmd_report(args: argparse.Namespace) -> int:
    from bridge.ops import report

    config = config_mod.load(args.config, offline=True)  # no secret needed to read the journal
    _quiet_logs()
    lines = report.build(config.state_dir, since_ns=report.since_ns(args.since))
    print(report.to_json(lines) if args.json or not sys.stdout.isatty() else report.render_table(lines))
    return int(ExitCode.OK)


def _cmd_close(args: argparse.Namespace) -> int:
    message = {"cmd": "close", "symbol": args.symbol, "exchange": args.exchange}  # None: the daemon picks
    return _ask_daemon(args, message, f"closing {args.symbol}")


def _cmd_resume(args: argparse.Namespace) -> int:
    return _ask_daemon(args, {"cmd": "resume", "reason": args.reason}, f"{args.reason} lifted")


def _ask_daemon(args: argparse.Namespace, message: dict[str, object], done: str) -> int:
    """Send one control request to the running daemon; print its answer. 0 if it did it, else 1."""
    from bridge.ops import control

    config = config_mod.load(args.config, offline=True)
    _quiet_logs()
    if not args.timeout > 0:
        raise ConfigError(f"--timeout: expected a positive number of seconds, got {args.timeout:g}")
    answer = asyncio.run(
        control.request(
            control.socket_path(config.state_dir, dry_run=config.trading.dry_run),
            message,
            timeout=args.timeout,
        )
    )
    if answer["ok"]:
        # The daemon's words are scrubbed here too: its answer may quote an exchange's error text.
        print(secrets.scrub(str(answer.get("message") or done)))
        return int(ExitCode.OK)
    error = secrets.scrub(str(answer.get("error") or "the daemon refused, without a reason"))
    print(f"bridge: {error}", file=sys.stderr)
    return int(ExitCode.FAILURE)


def _cmd_show_config(args: argparse.Namespace) -> int:
    import yaml

    config = config_mod.load(args.config, offline=True)  # secrets are shown as *** anyway: none needed
    # Secret fields and secret-named ccxt keys are `***` already; a secret given to any other key
    # (a strategy param from ${file:...}) is scrubbed from the data before YAML quotes or folds it.
    data = secrets.scrub_value(config_mod.redacted(config))
    print(secrets.scrub(yaml.safe_dump(data, sort_keys=False)), end="")
    return int(ExitCode.OK)
