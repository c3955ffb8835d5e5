"""The `ha:` section: a hot-standby pair's lease on etcd (bridge.ops.ha; README "Running a pair")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bridge.schema import SchemaError, check_section


@dataclass(frozen=True)
class HAConfig:
    """A hot-standby pair (bridge.ops.ha): the host holding the etcd lease on `key_prefix` + "leader"
    sends orders; the other follows everything and sends nothing."""

    endpoints: tuple[str, ...]  # etcd client URLs (http://host:2379), tried in order
    name: str  # this host, as the lease holder's value says it
    backend: Literal["etcd"] = "etcd"
    lease_ttl: float = 3.0  # seconds; the leader renews every third of it
    key_prefix: str = "/bridge/"

    def __post_init__(self) -> None:
        check_section(self)
        if not self.endpoints:
            raise SchemaError("endpoints", "name at least one etcd URL (http://host:2379)")
        for i, url in enumerate(self.endpoints):
            if not re.fullmatch(r"https?://[^/\s]+/?", url):
                raise SchemaError(f"endpoints[{i}]", f"expected http://host:port, got {url!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name):
            raise SchemaError("name", "use 1-64 letters, digits, _ . -")
        if self.lease_ttl < 1:
            raise SchemaError("lease_ttl", f"must be at least 1 second, got {self.lease_ttl}")
        if not self.key_prefix.startswith("/"):
            raise SchemaError("key_prefix", f"must start with /, got {self.key_prefix!r}")
