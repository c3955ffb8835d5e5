"""A hot-standby pair on etcd: one leader lease, the standby follows and sends nothing (see
README "Running a pair"). `Pair` is what the daemon wires in; the rest is its parts."""

from bridge.ops.ha.pair import Pair

__all__ = ["Pair"]
