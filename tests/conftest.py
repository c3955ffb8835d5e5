"""Shared test set-up: every test starts with a fresh, known logging configuration."""

from __future__ import annotations

import io

import pytest

from bridge import logs


@pytest.fixture(autouse=True)
def _json_logging() -> None:
    """Route logs to a throwaway stream as JSON so tests never depend on a terminal."""
    logs.configure("debug", "json", stream=io.StringIO())
