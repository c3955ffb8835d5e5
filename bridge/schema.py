"""Turns plain YAML data into frozen dataclasses, checking every key and type once, up front.

Used for the config file and for strategy params alike, so both report mistakes the same way:
`<file>: <dotted.key>: <what is wrong>`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from bridge import secrets
from bridge.errors import ConfigError
from bridge.secrets import Secret

T = TypeVar("T")

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def describe(value: object) -> str:
    """Show a user's value in an error message, shortened."""
    if isinstance(value, Secret):
        return "a secret"
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return secrets.clip(text, 60, "...")  # scrubbed before the cut: a cut secret escapes the scrubber


class SchemaError(ConfigError):
    """A value does not fit the schema; `key` is the dotted path to it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


# Integers a setting may hold: what SQLite and every C long keep (no setting comes near it).
MAX_INT = 2**63


# The one rule for every number in the config (limits, timings, counts, ports): finite and positive,
# except these keys, where 0 has a meaning: "off" (markets_refresh, price_refresh, status_interval),
# "at once" (feed_down_after) or "any free port" (port). Ports are 0-65535. Each section's
# __post_init__ applies it to all of its numbers (check_section), so a new key is covered the day it
# is added. (reconnect.min_delay: 0 would reconnect in a tight loop; the server refuses reconnects
# within 5 s.)
ZERO_ALLOWED = frozenset({"markets_refresh", "price_refresh", "status_interval", "port", "feed_down_after"})
PORTS = frozenset({"port"})


def check_section(section: object) -> None:
    """check_numbers with the config's rule: ZERO_ALLOWED may be 0, PORTS are ports."""
    check_numbers(section, zero_allowed=ZERO_ALLOWED, ports=PORTS)


def check_numbers(
    section: object, *, zero_allowed: frozenset[str] = frozenset(), ports: frozenset[str] = frozenset()
) -> None:
    """Raise SchemaError naming the field of a dataclass `section` whose number is NaN, infinite,
    negative, zero (unless its name is in `zero_allowed`), or a port (a name in `ports`) outside
    0-65535. Bools and non-numbers are left alone; None (an unset optional) too."""
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise SchemaError(f.name, f"must be a finite number, got {value}")
        if f.name in ports and not 0 <= value <= 65535:
            raise SchemaError(f.name, f"a port is 0-65535 (0: any free port), got {describe(value)}")
        if value < 0 or (value == 0 and f.name not in zero_allowed):
            zero = " or 0" if f.name in zero_allowed else ""
            raise SchemaError(f.name, f"must be positive{zero}, got {describe(value)}")


def build(cls: type[T], data: object, key: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SchemaError(key, f"expected a mapping, got {describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    # A field whose name is a Python keyword is spelled with a trailing underscore (class_).
    aliases = {name.rstrip("_"): name for name in fields}
    unknown = [k for k in data if str(k) not in aliases]
    if unknown:
        where = f"{key}." if key else ""
        known = ", ".join(sorted(aliases))
        raise SchemaError(f"{where}{unknown[0]}", f"unknown key (known keys: {known})")
    values: dict[str, Any] = {}
    for yaml_name, field_name in aliases.items():
        field = fields[field_name]
        sub = f"{key}.{yaml_name}" if key else yaml_name
        if yaml_name in data:
            values[field_name] = convert(hints[field_name], data[yaml_name], sub)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SchemaError(sub, "required key is missing")
    try:
        return cls(**values)
    except SchemaError as exc:  # __post_init__ naming a key below this one (max_order_cost.usdt)
        raise SchemaError(f"{key}.{exc.key}" if key and exc.key else key or exc.key, exc.problem) from None
    except ValueError as exc:  # __post_init__ cross-field checks
        raise SchemaError(key, str(exc)) from None


def _either(problems: list[str]) -> str:
    """One message for a value no type of a union accepts: `expected a number or a mapping, got "x"`."""
    got = {p.partition(", got ")[2] for p in problems}
    alike = all(p.startswith("expected ") and ", got " in p for p in problems)
    if len(problems) > 1 and len(got) == 1 and alike:
        wanted = [p.removeprefix("expected ").partition(", got ")[0] for p in problems]
        return f"expected {' or '.join(wanted)}, got {got.pop()}"
    return " or ".join(problems)


def convert(tp: Any, value: object, key: str) -> Any:
    """Check `value` against type `tp`, converting where YAML is looser than Python (int -> float)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors: list[SchemaError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, key)
            except SchemaError as exc:
                errors.append(exc)
        for error in errors:  # the value had one type's shape and a part of it is wrong: name that part
            if error.key != key:
                raise error
        raise SchemaError(key, _either([error.problem for error in errors]))
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise SchemaError(key, f"expected one of {', '.join(map(str, choices))}, got {describe(value)}")
        return value
    if tp is Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str) and value:
            return Secret(value)
        raise SchemaError(key, f"expected a non-empty string, got {describe(value)}")
    if tp is bool:
        if not isinstance(value, bool):
            hint = ""
            if isinstance(value, str) and value.strip().lower() in (
                "true",
                "false",
                "yes",
                "no",
                "on",
                "off",
            ):
                hint = " (write true or false, unquoted: only those are booleans)"
            raise SchemaError(key, f"expected true or false, got {describe(value)}{hint}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(key, f"expected an integer, got {describe(value)}")
        if not -MAX_INT < value < MAX_INT:
            raise SchemaError(key, f"out of range, got {describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SchemaError(key, f"expected a number, got {describe(value)}")
        if isinstance(value, int) and not -MAX_INT < value < MAX_INT:
            raise SchemaError(key, f"out of range, got {describe(value)}")  # float() would overflow
        if not math.isfinite(value):  # YAML's .nan / .inf: never a meaningful setting
            raise SchemaError(key, f"expected a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SchemaError(key, f"expected a string, got {describe(value)}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise SchemaError(key, f"expected a path, got {describe(value)}")
        return Path(value)
    if origin is tuple:
        (item_tp, _) = get_args(tp)
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise SchemaError(key, f"expected a list, got {describe(value)}")
        return tuple(convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _, val_tp = get_args(tp)
        if not isinstance(value, dict):
            raise SchemaError(key, f"expected a mapping, got {describe(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SchemaError(key, f"keys must be strings, got {describe(k)}")
            out[k] = convert(val_tp, v, f"{key}.{k}")
        return out
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build(tp, value, key)
    raise TypeError(f"schema cannot handle type {tp!r} at {key}")  # a bug in bridge, not user input
