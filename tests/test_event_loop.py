"""runtime.event_loop: `bridge run` on asyncio's own loop by default, or on uvloop when the config asks."""

from __future__ import annotations

import asyncio
import sys

import pytest

from bridge import cli, config
from bridge.errors import ConfigError

BASE = "feed: {api_key: k, url: ws://127.0.0.1:9999}\n"


def test_event_loop_defaults_to_asyncio_and_takes_uvloop() -> None:
    """No runtime section: asyncio. `runtime: {event_loop: uvloop}` is read as written."""
    assert config.loads(BASE).runtime.event_loop == "asyncio"
    assert config.loads(BASE + "runtime: {event_loop: uvloop}\n").runtime.event_loop == "uvloop"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("runtime: {event_loop: trio}", "runtime.event_loop: expected one of asyncio, uvloop"),
        ("runtime: {evnt_loop: uvloop}", "runtime.evnt_loop: unknown key"),
    ],
)
def test_a_mistake_in_runtime_names_the_key(text: str, message: str) -> None:
    """An unknown loop or a mistyped key is a config error naming file and key."""
    with pytest.raises(ConfigError, match=f"^config.yaml: {message}"):
        config.loads(BASE + text + "\n", source="config.yaml")


def _loop_module(event_loop: str) -> str:
    """Run a command the way `bridge run` does, with the loop the config names; the module of the loop
    class it ran on."""
    factory = cli._loop_factory(config.loads(BASE + f"runtime: {{event_loop: {event_loop}}}\n"))

    seen: list[str] = []

    async def command(stop: asyncio.Event) -> int:
        seen.append(type(asyncio.get_running_loop()).__module__)
        return 0

    assert cli._run_async(command, factory) == 0
    return seen[0]


def test_the_command_runs_on_the_loop_the_config_names() -> None:
    """asyncio: the standard library's loop; uvloop: uvloop's Loop (a dev dependency)."""
    assert _loop_module("asyncio").startswith("asyncio")
    assert _loop_module("uvloop").startswith("uvloop")


def test_uvloop_asked_for_but_not_installed_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without uvloop importable, asking for it fails at start with one line naming the key."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    loaded = config.loads(BASE + "runtime: {event_loop: uvloop}\n", source="config.yaml")
    with pytest.raises(ConfigError, match=r"^config.yaml: runtime.event_loop: uvloop is not installed"):
        cli._loop_factory(loaded)
