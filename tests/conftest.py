"""Shared test set-up: logging goes as JSON to a throwaway stream, so tests never depend on a
terminal; a test that reconfigured logging (e.g. through the CLI, onto capsys's stream) gets the
session configuration back afterwards."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

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


# Property tests run the same examples every time (CI must not turn red by luck) and keep no example
# database in the checkout. Explore more locally with HYPOTHESIS_PROFILE=explore.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", max_examples=2000, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
