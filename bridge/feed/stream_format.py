"""The one stream format: the JSONL that `bridge record` writes, `bridge replay` reads and `bridge emulate
--script` plays. Versioned by a `{"version": N}` first line; a file without one is version 1, the layout
every earlier recording, script and example was written in (documented in README, "Stream files").
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bridge.errors import ConfigError

CURRENT_VERSION = 1
# The keys that say what a line is; a line has exactly one of them (a bare message, below, has none).
_KINDS = ("frame", "b64", "msg", "price", "markets")
# Line keys that steer `bridge emulate` and are never sent: seconds to wait before the line, frame type.
_EMULATOR_KEYS = frozenset({"delay", "binary"})
_STAMPED_TYPES = frozenset({"announcement", "test_announcement"})


class StreamVersionError(ConfigError):
    """The file says it is a newer version of the stream format than this bridge reads: upgrade bridge
    (or rewrite the file). Fatal for the command that read it, exit 78."""


@dataclass(frozen=True)
class StreamLine:
    """One line of a stream file, as written. Exactly one of `frame`, `price` and `markets` is set.

    `frame` is the bytes a client received (from a `frame`, `b64` or `msg` line); `message` is the
    message object for a `msg` line (so the emulator can fill its missing timestamps). `t_ns` is the
    receipt time in ns since the epoch, None where the line gives none: each reader decides what that
    means (replay: the previous line's time, with a warning; the emulator: the time it sends)."""

    lineno: int
    t_ns: int | None = None
    frame: bytes | None = None
    message: dict[str, Any] | None = None
    link: str | None = None
    price: tuple[str, str, float] | None = None  # exchange, symbol, price
    markets: dict[str, dict[str, float | None]] | None = None  # exchange -> symbol -> price or None
    delay: float = 0.0
    binary: bool = True


@dataclass(frozen=True)
class StreamFile:
    source: str
    version: int
    versioned: bool  # False: no version line (read as version 1)
    lines: list[StreamLine] = field(default_factory=list)


# ---- reading -------------------------------------------------------------------------------------


def read(path: Path) -> StreamFile:
    """Read and check a whole stream file; every problem is a ConfigError naming the file and line,
    a version newer than CURRENT_VERSION a StreamVersionError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read stream file: {exc.strerror or exc}") from None
    return parse(data.splitlines(), str(path))


def parse(lines: Iterable[bytes | str], source: str) -> StreamFile:
    """Parse stream lines (blank lines and lines starting with `#` are skipped)."""
    version: int | None = None
    parsed: list[StreamLine] = []
    first = True
    for lineno, raw in enumerate(lines, 1):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ConfigError(f"{source}:{lineno}: not a stream line (not valid JSON)") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{source}:{lineno}: not a stream line (expected a JSON object)")
        if "version" in obj and not any(k in obj for k in _KINDS):
            if not first:
                raise ConfigError(f"{source}:{lineno}: the version line must be the first line")
            version = _version(obj["version"], source, lineno)
        else:
            try:
                parsed.append(_line(obj, lineno))
            except (TypeError, ValueError, KeyError, binascii.Error) as exc:
                raise ConfigError(f"{source}:{lineno}: not a stream line ({exc})") from None
        first = False
    return StreamFile(source, version or 1, version is not None, parsed)


def _version(value: Any, source: str, lineno: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{source}:{lineno}: version must be a whole number >= 1, got {value!r}")
    if value > CURRENT_VERSION:
        raise StreamVersionError(
            f"{source}: stream format version {value} is newer than this bridge reads "
            f"(version {CURRENT_VERSION} and older): upgrade bridge to read it"
        )
    return value


def _line(obj: dict[str, Any], lineno: int) -> StreamLine:
    kinds = [k for k in _KINDS if k in obj]
    if len(kinds) > 1:
        raise ValueError(f"one of {', '.join(_KINDS)} per line, got {', '.join(kinds)}")
    t = obj.get("t")
    if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 0):
        raise TypeError(f"t must be a whole number of ns since the epoch, got {t!r}")
    link = obj.get("link")
    if link is not None and not isinstance(link, str):
        raise TypeError("link must be a string")
    delay = obj.get("delay", 0)
    if not isinstance(delay, int | float) or isinstance(delay, bool) or not 0 <= delay < float("inf"):
        raise ValueError(f"delay must be a number of seconds >= 0, got {delay!r}")
    binary = obj.get("binary", True)
    if not isinstance(binary, bool):
        raise TypeError("binary must be true or false")
    common: dict[str, Any] = {
        "lineno": lineno,
        "t_ns": t,
        "link": link,
        "delay": float(delay),
        "binary": binary,
    }
    kind = kinds[0] if kinds else None
    if kind == "markets":
        markets = {
            str(ex): {str(s): None if p is None else float(p) for s, p in symbols.items()}
            for ex, symbols in obj["markets"].items()
        }
        return StreamLine(lineno, t, markets=markets)
    if kind == "price":
        p = obj["price"]
        return StreamLine(lineno, t, price=(str(p["exchange"]), str(p["symbol"]), float(p["price"])))
    if kind == "frame":
        if not isinstance(obj["frame"], str):
            raise TypeError("frame must be a string")
        return StreamLine(frame=obj["frame"].encode(), **common)
    if kind == "b64":
        return StreamLine(frame=base64.b64decode(obj["b64"], validate=True), **common)
    if kind == "msg":
        message = obj["msg"]
    elif isinstance(obj.get("type"), str):
        # A bare message, as hand-written emulator scripts have always been: short for {"msg": ...}.
        message = {k: v for k, v in obj.items() if k not in _EMULATOR_KEYS}
    else:
        raise ValueError(f"expected one of {', '.join(_KINDS)} (or a message with a type)")
    if not isinstance(message, dict):
        raise TypeError("msg must be a JSON object")
    return StreamLine(frame=orjson.dumps(message), message=message, **common)


# ---- the emulator's side -------------------------------------------------------------------------


def fill_timestamps(message: Mapping[str, Any], now_ns: int) -> dict[str, Any]:
    """The message with the timestamps it lacks set to `now_ns`: detection and dispatch times of an
    announcement, the time of a heartbeat. What the file gives is kept."""
    filled = dict(message)
    if filled.get("type") in _STAMPED_TYPES:
        filled.setdefault("detectedTimestampUs", now_ns // 1000)
        filled.setdefault("dispatchTimestampUs", now_ns // 1000)
    elif filled.get("type") == "heartbeat" and "timestampNs" not in filled:
        filled["timestampNs"] = now_ns
        stamp = datetime.fromtimestamp(now_ns // 1_000_000_000, UTC).replace(
            microsecond=now_ns // 1000 % 1_000_000
        )
        filled["timeUtc"] = stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return filled


# ---- writing -------------------------------------------------------------------------------------


def header() -> dict[str, Any]:
    return {"version": CURRENT_VERSION}


def frame_line(t_ns: int, data: bytes, link: str | None = None) -> dict[str, Any]:
    """A received frame: as text if it is UTF-8, else base64."""
    line: dict[str, Any]
    try:
        line = {"t": t_ns, "frame": data.decode("utf-8")}
    except UnicodeDecodeError:
        line = {"t": t_ns, "b64": base64.b64encode(data).decode()}
    if link is not None:
        line["link"] = link
    return line


def message_line(
    message: Mapping[str, Any], *, t_ns: int | None = None, delay: float | None = None, binary: bool = True
) -> dict[str, Any]:
    """A message written by hand (or by a tool); `delay` and `binary` steer the emulator only."""
    line: dict[str, Any] = {} if t_ns is None else {"t": t_ns}
    line["msg"] = dict(message)
    if delay is not None:
        line["delay"] = delay
    if not binary:
        line["binary"] = False
    return line


def markets_line(markets: Mapping[str, Mapping[str, float | None]]) -> dict[str, Any]:
    return {"markets": {ex: dict(symbols) for ex, symbols in markets.items()}}


def price_line(t_ns: int, exchange: str, symbol: str, price: float) -> dict[str, Any]:
    return {"t": t_ns, "price": {"exchange": exchange, "symbol": symbol, "price": price}}


def dumps(line: Mapping[str, Any]) -> bytes:
    """One line of the file, newline included."""
    return orjson.dumps(line) + b"\n"


def write(path: Path, lines: Iterable[Mapping[str, Any]]) -> None:
    """Write a whole stream file: the version line, then `lines`."""
    path.write_bytes(b"".join(dumps(line) for line in [header(), *lines]))
