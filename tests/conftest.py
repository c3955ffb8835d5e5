"""Shared test set-up: logging is configured once, as JSON to a throwaway stream, so tests never
depend on a terminal and structlog's cached loggers keep one processor chain (capture_logs works)."""

from __future__ import annotations

import io

import pytest

from bridge import logs


@pytest.fixture(autouse=True, scope="session")
def _json_logging() -> None:
    logs.configure("debug", "json", stream=io.StringIO())
