"""A YAML syntax error in words: which line is wrong, what it says, and what usually causes that parser
message in a hand-edited config, with the parser's own message kept at the end."""

from __future__ import annotations

from typing import Any

# A fragment of the parser's problem (lower case) -> what it usually means in a config, in words.
_WORDS: tuple[tuple[str, str], ...] = (
    (
        "mapping values are not allowed",
        "a `key: value` where none may start: this line is indented "
        "deeper than the key above it, or a value holds ': ' and needs quotes",
    ),
    (
        "cannot start any token",
        "a character YAML cannot start a value with here (a tab? YAML indents "
        "with spaces only; or an @ or ` that needs quotes)",
    ),
    ("found undefined alias", "a *name that refers to no &name defined above it"),
    ("did not find expected ',' or ']'", "a [ list ] that is not closed, or a missing comma"),
    ("did not find expected ',' or '}'", "a { mapping } that is not closed, or a missing comma"),
    ("unexpected end of stream", "a quote or bracket opened and never closed"),
    (
        "could not find expected ':'",
        "a line that is not `key: value` (a missing colon, or an unclosed quote above)",
    ),
    ("expected <block end>", "this line's indentation does not match the keys above it"),
    ("did not find expected key", "this line's indentation does not match the keys above it"),
    (
        "did not find expected '-' indicator",
        "a list item (`- `) indented differently from the items above it",
    ),
    ("found duplicate anchor", "the same &name defined twice"),
    ("while scanning a quoted scalar", "a quote opened and never closed"),
)


def describe(exc: Any, text: str) -> str:
    """`line N, column C: not valid YAML: <words> (the line: "..."; parser: ...)` for a yaml.MarkedYAMLError;
    the parser's message alone when it carries no position."""
    mark = getattr(exc, "problem_mark", None)
    problem = str(getattr(exc, "problem", None) or "invalid YAML")
    context = str(getattr(exc, "context", None) or "")
    if mark is None:
        return f"not valid YAML: {problem}"
    lines = text.splitlines()
    started = getattr(exc, "context_mark", None)
    line = mark.line
    at_end = line >= len(lines) or not lines[line].strip() or "end of stream" in problem
    if at_end and started is not None:
        line = started.line  # the end of the file: what was left open is where it started
    index = max(0, min(line, len(lines) - 1))
    words = next((w for frag, w in _WORDS if frag in problem.lower()), None)
    if words is None:
        words = next((w for frag, w in _WORDS if context and frag in context.lower()), problem)
    opened = ""
    if started is not None and started.line != index:
        opened = f"; it started on line {started.line + 1}"
    quoted = lines[index].rstrip() if lines else ""  # leading spaces and tabs shown: they are the point
    if len(quoted) > 80:
        quoted = quoted[:77] + "..."
    hint = ' (inside { } a ${VAR} must be quoted: "${VAR}")' if "${" in quoted else ""
    parser = f"{context} {problem}".strip() if context else problem
    where = f"line {index + 1}" + (f", column {mark.column + 1}" if index == mark.line else "")
    return f"{where}: not valid YAML: {words}{opened}{hint} (the line: {quoted!r}; parser: {parser})"
