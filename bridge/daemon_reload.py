"""`systemctl reload bridge` (SIGHUP), the control socket's `reload` and Telegram's /reload: re-read
config.yaml and apply what can change live (strategies, risk and trading limits, alert settings) without
touching the feed connection, the queued announcements or the open positions. A new config that is
invalid, or that changes something only a restart can (the feed, state_dir, dry_run, the exchange
accounts), is refused with the reason and the running one stays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from bridge import config as config_mod
from bridge import config_check
from bridge.config import Config, StrategyConfig
from bridge.errors import ConfigError
from bridge.trading.dispatch import StrategyRunner, call_hook
from bridge.trading.plugins import load_strategy
from bridge.trading.strategy import Context, Strategy

if TYPE_CHECKING:
    from bridge.daemon import Daemon

log = structlog.get_logger(__name__)

# trading.* keys a reload cannot apply: the paper/live switch, and settings read once by a running task.
RESTART_ONLY_TRADING = frozenset(
    {
        "dry_run",
        "paper_balance",
        "price_refresh",
        "max_clock_skew",
        "max_clock_offset",
        "max_tickers_per_announcement",
    }
)
# alerts.* keys that build the alert channels and the Telegram command poller, once, at start.
RESTART_ONLY_ALERTS = frozenset({"webhook", "telegram"})


class ReloadRefused(Exception):
    """The new config is not applied; the message is the one-line reason."""


@dataclass
class StrategyPlan:
    keep: list[StrategyRunner]
    add: list[tuple[StrategyConfig, Strategy]]  # new names and changed entries, loaded, not started
    retire: list[StrategyRunner]  # removed, disabled or changed: finish what they hold, then stop


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configs (dataclasses compared field by field;
    `exchanges` name by name; any other value, a mapping or list included, as a whole)."""
    if dataclasses.is_dataclass(old) and type(old) is type(new):
        out: list[str] = []
        for f in dataclasses.fields(old):
            if f.compare:
                out += changed_keys(getattr(old, f.name), getattr(new, f.name), f"{prefix}{f.name}.")
        return out
    key = prefix.rstrip(".")
    if key == "exchanges" and isinstance(old, dict) and isinstance(new, dict):
        out = []
        for name in sorted(set(old) | set(new)):
            if name not in old or name not in new:
                out.append(f"exchanges.{name}")
            else:
                out += changed_keys(old[name], new[name], f"exchanges.{name}.")
        return out
    return [] if old == new else [key]


def live(key: str) -> bool:
    """Whether a reload applies a change of `key`; anything not listed here needs a restart."""
    section, _, rest = key.partition(".")
    if section == "strategies":
        return True
    if section == "trading":
        return rest.split(".")[0] not in RESTART_ONLY_TRADING
    if section == "alerts":
        return rest.split(".")[0] not in RESTART_ONLY_ALERTS
    return section == "exchanges" and rest.endswith(".daily_max_cost")


def refusal_for(keys: Sequence[str]) -> str | None:
    """`feed.api_key cannot change on reload: restart` for the restart-only keys among `keys`."""
    fixed = [k for k in keys if not live(k)]
    if not fixed:
        return None
    return f"{', '.join(fixed)} cannot change on reload: restart"


def plan_strategies(runners: Sequence[StrategyRunner], old: Config, new: Config) -> StrategyPlan:
    """Which running strategies stay as they are (their entry unchanged), which are loaded anew (new
    name, or a changed entry: params, module, class, limits), which are retired. Raises ConfigError
    when a new or changed plugin cannot be loaded."""
    before = {s.name: s for s in old.strategies if s.enabled}
    after = {s.name: s for s in new.strategies if s.enabled}
    running = {r.name: r for r in runners}
    keep = [r for name, r in running.items() if after.get(name) == before.get(name)]
    retire = [r for name, r in running.items() if after.get(name) != before.get(name)]
    # An entry unchanged but not running (its on_start failed at start) stays out, as at start.
    add = [
        (spec, load_strategy(spec, new.source)) for name, spec in after.items() if before.get(name) != spec
    ]
    return StrategyPlan(keep, add, retire)


def lint_errors(config: Config, strategies: Sequence[Strategy]) -> str | None:
    """The first config_lint error (as `check-config` and `run` refuse it), or None."""
    try:
        config_check.lint_lines(config, strategies)
    except ConfigError as exc:
        return str(exc)
    return None


class Reloader:
    """Applies a reload to a running daemon; one at a time."""

    def __init__(self, daemon: Daemon, *, hook_timeout: float | None) -> None:
        self._daemon = daemon
        self._hook_timeout = hook_timeout
        self._lock = asyncio.Lock()
        self.reloads = 0  # applied, for tests and the status line
        self._pending: set[asyncio.Task[None]] = set()

    def request(self) -> None:
        """SIGHUP: reload in a task of its own (a signal handler cannot await)."""
        task = asyncio.create_task(self._signalled(), name="reload")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _signalled(self) -> None:
        try:
            await self.reload()
        except Exception:  # a reload must never take the daemon down: the running config stays
            log.exception("daemon.reload_failed")

    async def reload(self) -> tuple[bool, str]:
        """(applied, the answer's text). Refused (False) with a one-line reason, logged
        `daemon.reload_refused` and alerted; applied, logged `daemon.reloaded`."""
        d = self._daemon
        if not d.ready.is_set() or d.system is None or d.mode != "normal" or d._stop.is_set():
            reason = "the daemon is not running normally (starting, stopping or exits-only)"
            log.warning("daemon.reload_refused", reason=reason)
            return False, f"reload refused: {reason}"
        async with self._lock:
            d.systemd.reloading()
            began = time.perf_counter()
            refused: str | None = None
            try:
                text = await self._apply()
            except ReloadRefused as exc:
                refused = str(exc)
            finally:
                d.systemd.ready()
        if refused is not None:
            log.error("daemon.reload_refused", reason=refused, config=d.config.source)
            d.notifier.notify("reload_refused", f"config reload refused, the running config stays: {refused}")
            return False, f"reload refused: {refused}"
        self.reloads += 1
        log.info("daemon.reloaded", elapsed_ms=round((time.perf_counter() - began) * 1000, 1), summary=text)
        return True, text

    async def _apply(self) -> str:
        d = self._daemon
        old = d.config
        try:
            new = config_mod.load(old.source)  # a config not read from a file: "cannot read config file"
        except ConfigError as exc:
            raise ReloadRefused(str(exc)) from None
        keys = changed_keys(old, new)
        if (refusal := refusal_for(keys)) is not None:
            raise ReloadRefused(refusal)
        if not keys:
            return "config unchanged: nothing to apply"
        try:
            plan = plan_strategies(d.runners, old, new)
        except ConfigError as exc:
            raise ReloadRefused(str(exc)) from None
        if (
            error := lint_errors(new, [r.strategy for r in plan.keep] + [s for _, s in plan.add])
        ) is not None:
            raise ReloadRefused(error)
        started = await self._start_new(plan.add, new)
        self._swap(plan, started, new)
        names = {
            "added": sorted({s.name for _, s in plan.add} - {r.name for r in plan.retire}),
            "replaced": sorted({s.name for _, s in plan.add} & {r.name for r in plan.retire}),
            "removed": sorted({r.name for r in plan.retire} - {s.name for _, s in plan.add}),
        }
        parts = [f"{what}: {', '.join(n)}" for what, n in names.items() if n]
        other = [k for k in keys if not k.startswith("strategies")]
        parts += [f"changed: {', '.join(other)}"] if other else []
        return (
            "reloaded; " + "; ".join(parts)
            if parts
            else "reloaded; no running part changed (strategies reordered?)"
        )

    async def _start_new(
        self, add: list[tuple[StrategyConfig, Strategy]], new: Config
    ) -> list[StrategyRunner]:
        """Each new or changed strategy's context, `on_start` and runner (not yet running). One whose
        `on_start` fails refuses the reload (those already started get their `on_stop`)."""
        d = self._daemon
        system = d.system
        assert system is not None
        runners: list[StrategyRunner] = []
        for spec, strategy in add:
            ctx = Context(
                strategy=strategy.name,
                router=system.router,
                exchanges=system.exchanges,
                dry_run=new.trading.dry_run,
                claims=system.claims,
                price_max_age=spec.price_max_age,
                balances=system.balances,
            )
            if not await call_hook(
                strategy.name, "on_start", strategy.on_start(ctx), within=self._hook_timeout
            ):
                await _stop_all([r.strategy for r in runners], self._hook_timeout)
                raise ReloadRefused(
                    f"strategies[{strategy.name}]: on_start failed (see strategy.hook_failed)"
                )
            runners.append(
                StrategyRunner(
                    strategy,
                    ctx,
                    max_concurrent=spec.max_concurrent,
                    deadline=new.trading.strategy_deadline,
                )
            )
        return runners

    def _swap(self, plan: StrategyPlan, started: list[StrategyRunner], new: Config) -> None:
        """Everything at once, without an await: no announcement is dispatched half-way through."""
        d = self._daemon
        system = d.system
        assert system is not None
        # The limits first: the only step that reads the journal (today's realised result), so one that
        # fails leaves the strategies as they were.
        if system.risk is not None:
            system.risk.reconfigure(new.trading, new.exchanges)
        system.exposure.reconfigure(new.trading)
        system.prices.max_age = new.trading.price_max_age
        d.notifier.reconfigure(new.alerts)
        by_name = {r.name: r for r in started}
        for old_runner in plan.retire:
            successor = by_name.get(old_runner.name)
            if successor is not None:
                # Announcements it had not started yet go to the new one, which trades them as configured now.
                while not old_runner.queue.empty():
                    successor.put(old_runner.queue.get_nowait())
                    old_runner.queue.task_done()
        old_tasks = {
            t.get_name(): t for t in d._tasks if t.get_name().startswith("strategy:") and not t.done()
        }
        retiring = [(r, old_tasks.get(f"strategy:{r.name}")) for r in plan.retire]
        d.runners[:] = plan.keep + started  # the dispatcher hands out to this very list
        for runner in started:
            d._tasks.append(asyncio.create_task(runner.run(), name=f"strategy:{runner.name}"))
        for runner, task in retiring:
            d._tasks.append(asyncio.create_task(self._retire(runner, task), name=f"retire:{runner.name}"))
        for runner in plan.keep:
            runner.deadline = new.trading.strategy_deadline
        d.config = new

    async def _retire(self, runner: StrategyRunner, task: asyncio.Task[None] | None) -> None:
        """A strategy removed or replaced: what it is handling (an order in flight) finishes, then its
        runner stops and its `on_stop` runs."""
        await runner.idle.wait()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await call_hook(runner.name, "on_stop", runner.strategy.on_stop(), within=self._hook_timeout)
        log.info("strategy.retired", strategy=runner.name, handled=runner.handled)


async def _stop_all(strategies: Sequence[Strategy], within: float | None) -> None:
    for strategy in strategies:
        await call_hook(strategy.name, "on_stop", strategy.on_stop(), within=within)
