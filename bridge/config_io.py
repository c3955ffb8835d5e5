"""Reading config input without trusting it: bounded file reads (no FIFO, device or giant file can hang
or exhaust the loader) and a bounded count of a YAML document's values (no alias bomb)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

# A config file, or a secret file it names, bigger than this is refused rather than read.
MAX_CONFIG_BYTES = 1 << 20
MAX_SECRET_BYTES = 64 << 10
# Values in the config, counting each use of a YAML alias again: a few thousand in a real config; an
# "alias bomb" (a billion laughs) is refused when it passes this, in well under a second.
MAX_CONFIG_NODES = 100_000


def read_bounded(path: Path, limit: int) -> str:
    """A regular file's UTF-8 text, at most `limit` bytes. ValueError for a FIFO, a device (/dev/zero),
    a directory, a file over the limit, or text that is not UTF-8; OSError when it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block the open
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file (a pipe, a device or a directory cannot be a config)")
        if info.st_size > limit:
            raise ValueError(f"file is {info.st_size} bytes, over the {limit}-byte limit")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"file grew past the {limit}-byte limit while it was read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None


def count_nodes(node: Any, budget: int) -> int:
    """How many values `node` holds, counting shared ones (YAML aliases) at each use; stops past
    `budget` (returns more than it), so an alias bomb costs at most `budget` steps."""
    seen, stack = 0, [node]
    while stack and seen <= budget:
        item = stack.pop()
        seen += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return seen
