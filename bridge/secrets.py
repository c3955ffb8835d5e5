"""Secret values: a wrapper that never prints itself, and the registry the log redactor scrubs.

Every secret the config loads is registered here, so even a secret that leaks into an exception
message or a third-party log line is replaced by `***` before the line is written.
"""

from __future__ import annotations

import re
from typing import Final

REDACTED: Final = "***"
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None


class Secret:
    """A string that shows as `***` in repr, str, f-strings, logs and tracebacks. Use `reveal()` only
    at the point where the value is handed to a library."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def register(value: str) -> None:
    """Remember a secret value so `scrub` removes it from any text. Short values are ignored: scrubbing
    a 3-character string would mangle ordinary words, and no real key is that short."""
    global _pattern
    if len(value) >= 6 and value not in _known:
        _known.add(value)
        alternatives = sorted(_known, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in alternatives))


def scrub(text: str) -> str:
    """Replace every registered secret in `text` with `***`."""
    if _pattern is None:
        return text
    return _pattern.sub(REDACTED, text)
