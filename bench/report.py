"""What the latency benchmark (bench/latency.py) measured, and its printed table: the run's options,
the per-target latency series, burst results, the machine line and render()."""

from __future__ import annotations

import io
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.procs import REPO

TOO_SLOW_BEHIND = 10  # the feed closes a reader more than this many messages behind (1008 too_slow)

# The latency targets, in table order (and the order each announcement visits them), with their labels.
LABELS = {
    "daemon": "daemon, capped, warm prices",
    "daemon_fresh": "daemon, fresh journal (+look-up)",
    "daemon_market": "daemon, uncapped market order",
    "daemon_cold": "daemon, capped, cold prices",
    "floor": "floor (decode + signed aiohttp POST)",
    "ccxt_default": "daemon, ccxt default rate limiter",
}
UVLOOP_LABEL = "daemon, capped, warm, uvloop"


def labels(opts: Options) -> dict[str, str]:
    """The normal run's targets in table order: LABELS, with `daemon_uvloop` after `daemon` if asked."""
    if not opts.uvloop:
        return dict(LABELS)
    out: dict[str, str] = {}
    for name, label in LABELS.items():
        out[name] = label
        if name == "daemon":
            out["daemon_uvloop"] = UVLOOP_LABEL
    return out


# The two-link run's paths (bench/links.py), in table order, with their labels (delay: --link-delay-ms).
LINK_LABELS = {
    "links_fast": "two links, fast undelayed",
    "links_swapped": "two links, delay swapped to fast",
    "slow_alone": "slow link alone ({delay} behind)",
}


# ----- statistics ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of `values` (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Series:
    name: str
    values: list[float] = field(default_factory=list)  # microseconds
    missing: int = 0

    def p(self, q: float) -> float:
        return percentile(self.values, q) if self.values else float("nan")

    @property
    def max(self) -> float:
        return max(self.values) if self.values else float("nan")


def buckets(text: str, name: str, since: str | None = None) -> dict[float, float]:
    """Histogram `name`'s cumulative bucket counts (upper bound -> count, all label sets summed) in
    exposition `text`, minus those in the earlier scrape `since` (the observations in between)."""
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == name + "_bucket":
                le = float(sample.labels["le"])
                out[le] = out.get(le, 0.0) + sample.value
    if since is not None:
        for le, count in buckets(since, name).items():
            out[le] = out.get(le, 0.0) - count
    return out


def quantile(counts: dict[float, float], q: float) -> float:
    """The q-quantile (0..1) of cumulative bucket `counts`, interpolated linearly within its bucket as
    Prometheus' histogram_quantile does; NaN if empty, the highest finite bound if in the +Inf bucket."""
    if not counts or counts.get(float("inf"), 0.0) <= 0:
        return float("nan")
    bounds = sorted(counts)
    rank = q * counts[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        count = counts[le]
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = le, count
    return lower


def highest_bucket(counts: dict[float, float]) -> float:
    """The upper bound of the highest bucket holding an observation (inf: above every bound; 0: none)."""
    bounds = sorted(counts)
    for lower, upper in zip([*bounds[:-1]][::-1], bounds[::-1], strict=False):
        if counts[upper] > counts[lower]:
            return upper
    return bounds[0] if bounds and counts[bounds[0]] > 0 else 0.0


def metric_value(text: str, name: str) -> float:
    """The value of sample `name` (summed over label sets) in exposition `text`; NaN if absent."""
    total, seen = 0.0, False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total, seen = total + sample.value, True
    return total if seen else float("nan")


@dataclass(frozen=True)
class Internal:
    """A daemon's `bridge_order_internal_seconds` (frame received to order request written), µs."""

    p50: float
    p99: float
    count: int

    @classmethod
    def from_metrics(cls, text: str, since: str | None = None) -> Internal:
        """From a /metrics scrape; with `since`, only the orders after that earlier scrape."""
        counts = buckets(text, "bridge_order_internal_seconds", since)
        total = counts.get(float("inf"), 0.0)
        return cls(quantile(counts, 0.5) * 1e6, quantile(counts, 0.99) * 1e6, int(total))


@dataclass(frozen=True)
class Target:
    """One line of the end-of-run summary: what was measured against which target."""

    what: str
    measured: str
    target: str
    ok: bool | None  # None: no verdict (reported only)


def render_targets(targets: Sequence[Target]) -> str:
    out = ["", "summary: targets (issue 12: venues; issue 15: normal, stress, internal, uvloop)"]
    out.append(f"  {'what':<58} {'measured':>22} {'target':>18} {'':>5}")
    for t in targets:
        verdict = "-" if t.ok is None else "ok" if t.ok else "MISS"
        out.append(f"  {t.what:<58} {t.measured:>22} {t.target:>18} {verdict:>5}")
    return "\n".join(out) + "\n"


def ms(v: float) -> str:
    """Microseconds as milliseconds for the tables ("-" for NaN)."""
    return f"{v / 1000:.3f} ms" if v == v else "-"


# ----- the run's options and results -----------------------------------------------------------------


@dataclass
class Options:
    n: int
    gap_ms: float
    multi: int
    bursts: int
    burst_size: int
    burst_tickers: int
    burst_seconds: float
    markets: int
    keep: bool = False
    links: int = 200  # announcements per path of the two-link run (0: no two-link run)
    link_delay_ms: float = 5.0  # how much later the delayed endpoint writes
    # which runs: "normal" (the table above, the two-link run and the bursts), "venues", "stress"
    parts: frozenset[str] = frozenset({"normal", "venues", "stress"})
    uvloop: bool = True  # the normal run also has `daemon_uvloop`, the same daemon on uvloop
    venues: int = 200  # multi-venue run: announcements (bench/venues.py)
    stress: int = 200  # stress run: announcements (bench/stress.py)
    stress_markets: int = 3000  # stress run: markets on its fake Binance, fully refreshed every 2 s
    stress_seconds: float = 65.0  # stress run: its announcements spread over this long (> /health's minute)


@dataclass
class BurstResult:
    sent: int
    send_s: float
    drain_s: float
    announcements_journaled: int
    outcomes: dict[str, int]
    handled_ok: bool
    orders: int
    duplicate_orders: int
    max_behind: int
    max_reader_lag_ms: float
    rss_kib: int
    peak_kib: int


@dataclass
class LinksResult:
    """The two-link run (bench/links.py). Latencies from the earliest endpoint write of each announcement."""

    latency: dict[str, Series] = field(default_factory=dict)  # path -> announcement -> order
    write_gap: Series = field(default_factory=lambda: Series("write gap"))  # later write - earlier, µs
    # two-link path -> the link its announcements arrived through first (from the journal) -> how many
    won_by: dict[str, dict[str, int]] = field(default_factory=dict)
    # link -> announcements the two-link daemon counted it ahead on (its /metrics), warm-up included
    metrics_ahead: dict[str, int] = field(default_factory=dict)
    announcements: int = 0  # sent to the two-link daemon (measured and warm-up)
    orders: int = 0  # its orders at the fake exchange
    doubled: int = 0  # repeated client order ids among them


@dataclass
class Report:
    machine: str
    markets: int = 0  # on the fake exchange
    startup_s: dict[str, float] = field(default_factory=dict)
    single: dict[str, Series] = field(default_factory=dict)
    multi_first: dict[str, Series] = field(default_factory=dict)
    multi_last: dict[str, Series] = field(default_factory=dict)
    # the fresh-journal daemon's order look-ups (GET /api/v3/order) seen while its measured orders were
    # awaited, and those orders: every order should have been looked up first
    fresh_lookups: int = 0
    fresh_orders: int = 0
    links: LinksResult | None = None
    bursts: list[BurstResult] = field(default_factory=list)
    # daemon name -> its bridge_order_internal_seconds at the end of the normal run's latency part
    internal: dict[str, Internal] = field(default_factory=dict)
    rss_before_bursts_kib: int = 0
    wall_s: float = 0.0
    coldpath: str = ""  # bench/coldpath.py's line, measured before any process starts


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, cwd=REPO
        ).stdout.strip()
    except OSError:
        commit = ""
    where = f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"
    return where + (f", bridge {commit}" if commit else "")


# ----- output ----------------------------------------------------------------------------------------


def render(report: Report, opts: Options) -> str:
    out = io.StringIO()

    def w(line: str = "") -> None:
        out.write(line + "\n")

    def us(v: float) -> str:
        return f"{v / 1000:.3f} ms" if v == v else "-"

    w(f"machine: {report.machine}")
    if report.coldpath:
        w(report.coldpath)
    w(
        f"announcements: {opts.n} single-ticker (+5 warm-up), {opts.multi} three-ticker, "
        f"gap {opts.gap_ms:g} ms; bursts: {opts.bursts} x {opts.burst_size} in {opts.burst_seconds:g} s, "
        f"{opts.burst_tickers} tickers each; {report.markets} markets on the fake exchange"
    )
    w()
    w("announcement -> order request (emulator frame write to fake exchange receipt, wall clock)")
    w(f"  {'path':<34} {'p50':>10} {'p99':>10} {'max':>10} {'missing':>8}")
    for name, label in labels(opts).items():
        s = report.single[name]
        w(f"  {label:<34} {us(s.p(50)):>10} {us(s.p(99)):>10} {us(s.max):>10} {s.missing:>8}")
    d, f, c = (report.single[k] for k in ("daemon", "floor", "ccxt_default"))
    m, cold, fresh = (report.single[k] for k in ("daemon_market", "daemon_cold", "daemon_fresh"))
    w(
        f"  daemon / floor: p50 {d.p(50) / f.p(50):.2f}x, p99 {d.p(99) / f.p(99):.2f}x;"
        f"  ccxt default / daemon: p50 {c.p(50) / d.p(50):.1f}x, p99 {c.p(99) / d.p(99):.1f}x"
    )
    w(
        f"  price cap: capped / market p50 {d.p(50) / m.p(50):.2f}x, p99 {d.p(99) / m.p(99):.2f}x;"
        f"  cold / warm p50 {cold.p(50) / d.p(50):.2f}x, p99 {cold.p(99) / d.p(99):.2f}x"
    )
    w(
        f"  fresh journal / daemon: p50 {fresh.p(50) / d.p(50):.2f}x, p99 {fresh.p(99) / d.p(99):.2f}x"
        f" (+{(fresh.p(50) - d.p(50)) / 1000:.3f} ms at p50);"
        f" {report.fresh_lookups} look-ups for {report.fresh_orders} orders"
    )
    if "daemon_uvloop" in report.single:
        u = report.single["daemon_uvloop"]
        w(
            f"  uvloop / asyncio daemon: p50 {u.p(50) / d.p(50):.2f}x, p99 {u.p(99) / d.p(99):.2f}x;"
            f"  uvloop daemon / floor: p50 {u.p(50) / f.p(50):.2f}x, p99 {u.p(99) / f.p(99):.2f}x"
        )
    for name, internal in report.internal.items():
        w(
            f"  {name} internal (bridge_order_internal_seconds, frame received -> request written):"
            f" p50 {internal.p50:.0f} us, p99 {internal.p99:.0f} us ({internal.count} orders, warm-up included)"
        )
    w()
    w("three tickers per announcement: first and last of the three orders")
    w(f"  {'path':<34} {'first p50':>10} {'last p50':>10} {'last p99':>10} {'missing':>8}")
    for name, label in labels(opts).items():
        first, last = report.multi_first[name], report.multi_last[name]
        w(f"  {label:<34} {us(first.p(50)):>10} {us(last.p(50)):>10} {us(last.p(99)):>10} {last.missing:>8}")
    if report.links is not None:
        render_links(report.links, opts, w)
    w()
    w("startup, launch to armed (feed welcomed, markets loaded)")
    for name, secs in report.startup_s.items():
        w(f"  {name:<34} {secs:.2f} s")
    w()
    w(
        f"bursts (daemon with listing_buy, listing_buy_b, log_only); RSS before: {report.rss_before_bursts_kib / 1024:.1f} MiB"
    )
    w(
        f"  {'#':>2} {'sent':>5} {'send s':>7} {'drain s':>7} {'journaled':>9} {'handled':>8} {'orders':>7}"
        f" {'doubled':>7} {'behind':>6} {'lag ms':>7} {'RSS MiB':>8} {'peak MiB':>8}"
    )
    for i, b in enumerate(report.bursts):
        w(
            f"  {i + 1:>2} {b.sent:>5} {b.send_s:>7.2f} {b.drain_s:>7.2f} {b.announcements_journaled:>9}"
            f" {'yes' if b.handled_ok else 'NO':>8} {b.orders:>7} {b.duplicate_orders:>7} {b.max_behind:>6}"
            f" {b.max_reader_lag_ms:>7.1f} {b.rss_kib / 1024:>8.1f} {b.peak_kib / 1024:>8.1f}"
        )
    for i, b in enumerate(report.bursts):
        w(f"  burst {i + 1} outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(b.outcomes.items())))
    w(
        f"  'behind': most frames written but not yet read by the feed reader (the feed drops a reader >{TOO_SLOW_BEHIND})"
    )
    return out.getvalue()


def normal_targets(report: Report) -> list[Target]:
    """Issue 15's targets on the normal run: daemon/floor p50 <= 1.25x and p99 <= 1.5x; the daemon's
    own frame-to-request time p50 <= 150 us, p99 <= 400 us; uvloop against asyncio (reported)."""
    d, f = report.single["daemon"], report.single["floor"]
    out = [
        Target(
            "normal: daemon / floor p50", f"{d.p(50) / f.p(50):.2f}x", "<= 1.25x", d.p(50) <= 1.25 * f.p(50)
        ),
        Target(
            "normal: daemon / floor p99", f"{d.p(99) / f.p(99):.2f}x", "<= 1.5x", d.p(99) <= 1.5 * f.p(99)
        ),
    ]
    for name, internal in report.internal.items():
        out += [
            Target(
                f"normal: {name} internal p50", f"{internal.p50:.0f} us", "<= 150 us", internal.p50 <= 150
            ),
            Target(
                f"normal: {name} internal p99", f"{internal.p99:.0f} us", "<= 400 us", internal.p99 <= 400
            ),
        ]
    u = report.single.get("daemon_uvloop")
    if u is not None:
        for q in (50, 99):
            out.append(
                Target(
                    f"normal: uvloop daemon p{q} (asyncio daemon {ms(d.p(q))})",
                    ms(u.p(q)),
                    "reported",
                    None,
                )
            )
    return out


def render_links(r: LinksResult, opts: Options, w: Callable[[str], None]) -> None:
    def us(v: float) -> str:
        return f"{v / 1000:.3f} ms" if v == v else "-"

    delay = f"{opts.link_delay_ms:g} ms"
    w("")
    w(
        f"two feed links: endpoints slow and fast, one written {delay} after the other; {opts.links}"
        " announcements per path; from the earliest endpoint write to fake exchange receipt"
    )
    w(f"  {'path':<34} {'p50':>10} {'p99':>10} {'max':>10} {'missing':>8}")
    for name, label in LINK_LABELS.items():
        s = r.latency[name]
        label = label.format(delay=delay)
        w(f"  {label:<34} {us(s.p(50)):>10} {us(s.p(99)):>10} {us(s.max):>10} {s.missing:>8}")
    two, swapped, alone = (r.latency[k] for k in LINK_LABELS)
    w(
        f"  two links / slow link alone: p50 {two.p(50) / alone.p(50):.2f}x, p99 {two.p(99) / alone.p(99):.2f}x"
        f" ({(two.p(50) - alone.p(50)) / 1000:+.3f} ms at p50);"
        f"  delay swapped / fast undelayed: p50 {swapped.p(50) / two.p(50):.2f}x"
    )
    won = []
    for name, counts in r.won_by.items():
        total = sum(counts.values())
        won.append(
            f"{LINK_LABELS[name].removeprefix('two links, ')}: "
            + ", ".join(f"{link} {n}/{total}" for link, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        )
    w("  first arrival (journal receipt before the other endpoint's write): " + "; ".join(won))
    ahead = ", ".join(f"{link} {n}" for link, n in sorted(r.metrics_ahead.items()))
    w(
        f"  the daemon's own count (/metrics bridge_feed_link_lead_seconds > 0): {ahead or '-'}"
        f" of {r.announcements} (warm-up included); {r.orders} orders, {r.doubled} doubled"
    )
    g = r.write_gap
    w(f"  endpoint write gap (later - earlier): p50 {us(g.p(50))}, p99 {us(g.p(99))}, max {us(g.max)}")
