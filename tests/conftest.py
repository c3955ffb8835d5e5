"""Shared test set-up: logging goes as JSON to a throwaway stream, so tests never depend on a
terminal; a test that reconfigured logging (e.g. through the CLI, onto capsys's stream) gets the
session configuration back afterwards."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from bridge.ops import logs

_SESSION_STREAM = io.StringIO()


def _configure() -> None:
    logs.configure("debug", "json", stream=_SESSION_STREAM)


@pytest.fixture(autouse=True, scope="session")
def _json_logging() -> None:
    _configure()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    streams = [getattr(h, "stream", None) for h in logging.getLogger().handlers]
    if streams != [_SESSION_STREAM]:
        _configure()
