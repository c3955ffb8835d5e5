"""`${VAR}`, `${file:/path}` and `${credential:NAME}` in config strings, resolved once at load. Every
value read from a file or credential is registered as a secret (scrubbed from every output).

In paper mode (`trading.dry_run` not `false`), an exchange's `api_key`, `secret` or `password` whose
variable, file or credential is not there is left out: paper trading reads public data only, so a
config made for live trading checks and runs in paper mode on a machine that holds no exchange keys.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bridge import secrets
from bridge.config_io import MAX_SECRET_BYTES, read_bounded
from bridge.schema import SchemaError

_SUBST = re.compile(r"\$\{([^}]*)\}")
EXCHANGE_KEYS = frozenset({"api_key", "secret", "password"})


def substitute(data: dict[str, Any], env: Any, *, offline: bool = False) -> dict[str, Any]:
    """`data` with every reference resolved. `offline`: an unresolvable one becomes `unset:REF` (for
    commands that need no secret). Raises SchemaError naming the key otherwise."""
    trading = data.get("trading")
    paper = not (isinstance(trading, dict) and trading.get("dry_run") is False)
    resolved: dict[str, Any] = _substitute(data, "", env, offline, paper)
    return resolved


def _optional(key: str, paper: bool) -> bool:
    """An exchange key paper trading can do without (`exchanges.NAME.api_key`, ...)."""
    parts = key.split(".")
    return paper and len(parts) == 3 and parts[0] == "exchanges" and parts[2] in EXCHANGE_KEYS


def _substitute(node: Any, key: str, env: Any, offline: bool, paper: bool) -> Any:
    if isinstance(node, dict):
        items = (
            (k, _substitute(v, f"{key}.{k}" if key else str(k), env, offline, paper)) for k, v in node.items()
        )
        return {k: v for k, v in items if v is not _LEFT_OUT}
    if isinstance(node, list):
        return [_substitute(v, f"{key}[{i}]", env, offline, paper) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        try:
            return _SUBST.sub(lambda m: _resolve_or_placeholder(m.group(1), key, env, offline), node)
        except SchemaError:
            if _optional(key, paper):
                return _LEFT_OUT  # paper mode: public data only; this key is not needed
            raise
    return node


_LEFT_OUT = object()


def _resolve_or_placeholder(ref: str, key: str, env: Any, offline: bool) -> str:
    try:
        return _resolve(ref, key, env)
    except SchemaError:
        if offline:
            return f"unset:{ref}"
        raise


def _resolve(ref: str, key: str, env: Any) -> str:
    if ref.startswith("file:"):
        return _read_secret_file(Path(ref[5:]), key)
    if ref.startswith("credential:"):
        cred_dir = env.get("CREDENTIALS_DIRECTORY")
        if not cred_dir:
            raise SchemaError(key, f"${{{ref}}} needs $CREDENTIALS_DIRECTORY (systemd LoadCredential=)")
        return _read_secret_file(Path(cred_dir) / ref[11:], key)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ref):
        raise SchemaError(key, f"${{{ref}}} is not a valid variable reference")
    value = env.get(ref)
    if value is None or value == "":
        raise SchemaError(key, f"environment variable {ref} is not set")
    return str(value)


def _read_secret_file(path: Path, key: str) -> str:
    try:
        value = read_bounded(path, MAX_SECRET_BYTES).strip()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SchemaError(key, f"cannot read secret file {path}: {reason}") from None
    if not value:
        raise SchemaError(key, f"secret file {path} is empty")
    secrets.register(value)
    return value
