"""etcd v3 through its JSON gateway (POST /v3/...), over aiohttp: the five calls a leader lease needs.

No client library: the gateway ships with every etcd 3.x, its JSON is stable, and the calls are one
request each (a streaming keepalive answers one JSON result per request body). Keys and values travel
base64-encoded; 64-bit integers as strings.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from bridge.errors import BridgeError

log = structlog.get_logger(__name__)


class EtcdUnavailable(BridgeError):
    """No endpoint answered (refused, timed out, 5xx or an unreadable answer). The caller treats its
    lease as unproven: a leader halts once its validity runs out, a standby tries again later."""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a key: its value (a host name) and the lease it is attached to."""

    name: str
    lease: int


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdGateway:
    """One aiohttp session over `endpoints` (tried in order; the first that answers wins)."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float) -> None:
        self._endpoints = [url.rstrip("/") for url in endpoints]
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, body: dict[str, Any], within: float | None = None) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        limit = aiohttp.ClientTimeout(total=self._timeout if within is None else within)
        problem = "no endpoint"
        for url in self._endpoints:
            try:
                async with self._session.post(url + path, json=body, timeout=limit) as resp:
                    if resp.status != 200:
                        problem = f"{url}: HTTP {resp.status}"
                        continue
                    data = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                problem = f"{url}: {type(exc).__name__}"
                continue
            if isinstance(data, dict):
                return data
            problem = f"{url}: not a JSON object"
        raise EtcdUnavailable(f"etcd {path}: {problem}")

    async def grant(self, ttl: float, *, within: float | None = None) -> int:
        """A new lease of `ttl` seconds (rounded up to whole seconds, as etcd counts); its id."""
        data = await self._post("/v3/lease/grant", {"TTL": str(max(1, round(ttl + 0.499)))}, within)
        try:
            return int(data["ID"])
        except (KeyError, ValueError, TypeError):
            raise EtcdUnavailable(f"etcd lease/grant: no lease id in {sorted(data)}") from None

    async def keepalive(self, lease: int, *, within: float | None = None) -> float:
        """Renew `lease`; the TTL etcd answers (0: the lease is gone, expired or revoked)."""
        data = await self._post("/v3/lease/keepalive", {"ID": str(lease)}, within)
        result = data.get("result")
        if not isinstance(result, dict):
            raise EtcdUnavailable("etcd lease/keepalive: no result")
        return float(result.get("TTL", 0) or 0)

    async def revoke(self, lease: int, *, within: float | None = None) -> None:
        await self._post("/v3/lease/revoke", {"ID": str(lease)}, within)

    async def create(self, key: str, value: str, lease: int, *, within: float | None = None) -> Holder | None:
        """Put `key` = `value` attached to `lease` only if the key does not exist (create revision 0).
        None when it was created; otherwise the holder found in its place."""
        k = _b64(key)
        body = {
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": k, "value": _b64(value), "lease": str(lease)}}],
            "failure": [{"request_range": {"key": k}}],
        }
        data = await self._post("/v3/kv/txn", body, within)
        if data.get("succeeded"):
            return None
        for response in data.get("responses") or ():
            kvs = (response.get("response_range") or {}).get("kvs") or ()
            if kvs:
                return _holder(kvs[0])
        return Holder("", 0)  # deleted between the compare and the range: taken by nobody, try again

    async def get(self, key: str, *, within: float | None = None) -> Holder | None:
        """The key's holder, or None when nobody holds it."""
        data = await self._post("/v3/kv/range", {"key": _b64(key)}, within)
        kvs = data.get("kvs") or ()
        return _holder(kvs[0]) if kvs else None


def _holder(kv: dict[str, Any]) -> Holder:
    try:
        name = base64.b64decode(kv.get("value", "")).decode(errors="replace")
        return Holder(name, int(kv.get("lease", 0) or 0))
    except (ValueError, TypeError):
        return Holder("?", 0)
