"""The trading gate: the single door to the exchange. It holds the halt reasons now in force (see
bridge.trading.halts for what each one stops); every order asks it, right before it is sent, whether
an entry or an exit may go to its exchange.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import structlog

from bridge.errors import TradingHalted
from bridge.trading.halts import HaltReason, halt_key, rule_for, split_key

__all__ = ["HaltReason", "LinkStatus", "Listener", "TradingGate"]

log = structlog.get_logger(__name__)

Listener = Callable[[bool, frozenset[str], str], None]


class TradingGate:
    """Holds the halt reasons in force. Starts halted ("starting", "disconnected").

    A reason scoped to one venue is held as "reason:venue" (e.g. "credentials_rejected:binance") and
    stops that venue only. With several feed links (`configure_links`), a feed reason is held per link
    ("feed_stale:kr") and stops trading only while the links left do not satisfy the policy (`any`:
    every link is down; `all`: one is). `reasons` lists every key, scoped or not."""

    def __init__(self) -> None:
        self._reasons: set[str] = {"starting", "disconnected"}
        self._listeners: list[Listener] = []
        self._links: frozenset[str] = frozenset()
        self._arm_when: Literal["any", "all"] = "any"

    def configure_links(self, names: Sequence[str], arm_when: Literal["any", "all"] = "any") -> None:
        """Several named feed links (before the feed starts): each starts `disconnected:NAME`."""
        self._links, self._arm_when = frozenset(names), arm_when
        if self._links and "disconnected" in self._reasons:
            self._reasons.discard("disconnected")
            self._reasons.update(halt_key("disconnected", name) for name in sorted(self._links))

    def link_healthy(self, name: str | None) -> bool:
        """Whether feed link `name` is up now (welcomed, heartbeats fresh); the single link: the feed."""
        if name is None:
            return not any(rule_for(key).scope == "link" for key in self._reasons)
        return not any(_link_of(key) == name for key in self._reasons)

    @property
    def armed(self) -> bool:
        """No halt reason in force, on any venue (a link that is down while the policy is met is not
        one)."""
        return not self._in_force()

    @property
    def covering_links(self) -> frozenset[str]:
        """The named links that are up now."""
        return frozenset(name for name in self._links if self.link_healthy(name))

    @property
    def reasons(self) -> frozenset[str]:
        return frozenset(self._reasons)

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(armed, in_force, changed_key)` on every change (notifier, sd_notify, daemon):
        `in_force` is the reasons that stop something now (see `in_force`)."""
        self._listeners.append(listener)

    def halt(self, reason: HaltReason, *, venue: str | None = None, link: str | None = None) -> None:
        """Set a halt reason; `venue` scopes a venue-scoped reason to that exchange, `link` a feed
        reason to that link. Without them the reason stops every venue (or the whole feed)."""
        if venue is not None and rule_for(reason).scope != "venue":
            # Halting more than asked is safe; ignoring a halt is not.
            log.error("trading.halt_scope_ignored", reason=reason, venue=venue)
            venue = None
        if link is not None and (rule_for(reason).scope != "link" or link not in self._links):
            log.error("trading.halt_scope_ignored", reason=reason, link=link)
            link = None
        key = halt_key(reason, venue if link is None else link)
        if key in self._reasons:
            return
        was_armed = self.armed
        self._reasons.add(key)
        log.warning(
            "trading.halted",
            reason=reason,
            venue=venue,
            link=link,
            reasons=sorted(self._reasons),
            was_armed=was_armed,
            armed=self.armed,
        )
        self._notify(key)

    def resume(self, reason: HaltReason, *, venue: str | None = None, link: str | None = None) -> None:
        """Clear one halt reason (for `venue` or `link` only, when given). Trading is armed again only
        once every reason in force is cleared."""
        key = halt_key(reason, venue if link is None else link)
        if key not in self._reasons:
            return
        self._reasons.discard(key)
        if self.armed:
            log.info("trading.resumed", reason=reason, venue=venue, link=link)
        else:
            log.info(
                "trading.halt_cleared",
                reason=reason,
                venue=venue,
                link=link,
                still_halted=sorted(self._reasons),
            )
        self._notify(key)

    def entry_blockers(self, exchange: str) -> frozenset[str]:
        """The reasons (keys) that stop a new entry on `exchange`: global ones that block entries, plus
        that venue's own."""
        if not self._reasons:  # the order path's usual case: nothing to look at
            return frozenset()
        return frozenset(k for k in self._in_force() if _applies(k, exchange) and rule_for(k).blocks_entries)

    def exit_blockers(self, exchange: str) -> frozenset[str]:
        """The reasons (keys) that stop an exit (a sell that reduces a position) on `exchange`."""
        if not self._reasons:
            return frozenset()
        return frozenset(k for k in self._in_force() if _applies(k, exchange) and rule_for(k).blocks_exits)

    def entries_armed(self, exchange: str) -> bool:
        """Whether a new entry may go to `exchange` now."""
        return not self.entry_blockers(exchange)

    def exits_armed(self, exchange: str) -> bool:
        """Whether an exit may go to `exchange` now."""
        return not self.exit_blockers(exchange)

    def halted_on(self, reason: HaltReason, exchange: str) -> bool:
        """Whether `reason` is in force for `exchange` (set for that venue or for every venue)."""
        return reason in self._reasons or halt_key(reason, exchange) in self._reasons

    def check(self, exchange: str | None = None) -> None:
        """Raise TradingHalted with the reasons that stop a new entry on `exchange` (every reason when
        None). Called by the order path right before sending."""
        blockers = frozenset(self._in_force()) if exchange is None else self.entry_blockers(exchange)
        if blockers:
            raise TradingHalted(blockers)

    @property
    def in_force(self) -> frozenset[str]:
        """The reasons that stop something now: `reasons` less the links that are down while the
        link policy is still met (/health's verdict and `armed` read this)."""
        return frozenset(self._in_force())

    def _in_force(self) -> set[str]:
        if not self._links or not self._reasons:
            return self._reasons
        down = {link for key in self._reasons if (link := _link_of(key)) is not None}
        feed_down = down >= self._links if self._arm_when == "any" else bool(down)
        if feed_down:
            return self._reasons
        return {key for key in self._reasons if _link_of(key) is None}

    def _notify(self, key: str) -> None:
        for listener in self._listeners:
            try:
                listener(self.armed, self.in_force, key)
            except Exception:  # a broken listener must never block a halt
                log.exception("trading.listener_failed")


def _applies(key: str, exchange: str) -> bool:
    reason, venue = split_key(key)
    return venue is None or venue == exchange or rule_for(reason).scope == "link"


def _link_of(key: str) -> str | None:
    """The link a link-scoped key names ("feed_stale:kr" -> "kr"); None for any other key."""
    reason, qualifier = split_key(key)
    return qualifier if qualifier is not None and rule_for(reason).scope == "link" else None


class LinkStatus:
    """One feed link's status sink (what its supervisor halts and resumes), scoped to that link; the
    single unnamed link halts the whole feed, as always."""

    def __init__(self, gate: TradingGate, link: str | None) -> None:
        self._gate = gate
        self._link = link

    def halt(self, reason: HaltReason) -> None:
        self._gate.halt(reason, link=self._link)

    def resume(self, reason: HaltReason) -> None:
        self._gate.resume(reason, link=self._link)
