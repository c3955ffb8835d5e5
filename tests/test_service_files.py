"""The systemd unit, its drop-in examples and the service config example agree with the daemon (exit
codes, credential names, state directory) and keep the rules that only systemd would enforce later.
`.ci/check-unit` runs systemd-analyze on the same files where it is installed."""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from pathlib import Path

import pytest

from bridge import config
from bridge.errors import ExitCode

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "bridge.service"
DROP_INS = sorted((SYSTEMD / "bridge.service.d").glob("*.conf.example"))
CONFIG_EXAMPLE = SYSTEMD / "config.example.yaml"


def settings(path: Path) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, in order, whatever the section."""
    found: dict[str, list[str]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found[key.strip()].append(value.strip())
    return found


def seconds(value: str) -> float:
    units = {"": 1, "s": 1, "min": 60}
    match = re.fullmatch(r"(\d+)(s|min|)", value)
    assert match, f"unexpected time span {value!r}"
    return int(match.group(1)) * units[match.group(2)]


def test_python_itself_is_the_notifying_main_process() -> None:
    """Type=notify with NotifyAccess=main needs ExecStart to run the venv's python directly (absolute
    path, `-m bridge run`, no shell wrapper whose PID would be the main one)."""
    unit = settings(UNIT)
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    (exec_start,) = unit["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == "/opt/bridge/.venv/bin/python"
    assert argv[1:4] == ["-m", "bridge", "run"]
    assert not any(word in ("sh", "bash", "-c", "exec") or word.endswith("/sh") for word in argv)


def test_restart_policy_matches_the_exit_codes() -> None:
    """Restarts on failure, but never for an exit a restart cannot fix: 77 (credentials rejected), 78
    (config) and systemd's own 243 (a credential file missing), and not in a tight loop."""
    unit = settings(UNIT)
    assert unit["Restart"] == ["on-failure"]
    assert {int(code) for code in unit["RestartPreventExitStatus"][0].split()} == {
        ExitCode.CREDENTIALS,
        ExitCode.CONFIG,
        243,  # systemd's EXIT_CREDENTIALS
    }
    assert seconds(unit["RestartSec"][0]) >= 5  # the feed refuses same-key reconnects within 5 s
    assert unit["StartLimitBurst"] and unit["StartLimitIntervalSec"]


def test_watchdog_and_stop_timeouts() -> None:
    """A watchdog is armed; the stop timeout leaves the daemon's ~5 s graceful shutdown a wide margin
    before SIGKILL; no core dumps (they would hold keys)."""
    unit = settings(UNIT)
    assert 10 <= seconds(unit["WatchdogSec"][0]) <= 120
    assert seconds(unit["TimeoutStopSec"][0]) >= 15
    assert unit["LimitCORE"] == ["0"]


def test_keys_only_through_credentials() -> None:
    """No key travels in Environment=; every LoadCredential= reads an absolute file under
    /etc/bridge/credentials, named as the credential."""
    files = [UNIT, *DROP_INS]
    for path in files:
        for value in settings(path).get("Environment", []):
            assert not re.search(r"KEY|SECRET|TOKEN|PASSWORD", value, re.IGNORECASE), (path, value)
    for path in files:
        for value in settings(path).get("LoadCredential", []):
            name, source = value.split(":", 1)
            assert source == f"/etc/bridge/credentials/{name}", (path, value)


def test_config_example_credentials_are_all_loaded_by_the_unit_files() -> None:
    """Every ${credential:NAME} the service config example uses (live-trading lines included) is
    loaded by the unit or one of its drop-in examples."""
    used = set(re.findall(r"\$\{credential:([a-z0-9_]+)\}", CONFIG_EXAMPLE.read_text()))
    loaded = {
        value.split(":", 1)[0]
        for path in [UNIT, *DROP_INS]
        for value in settings(path).get("LoadCredential", [])
    }
    assert used == loaded


def test_config_example_loads_and_writes_to_the_state_directory(tmp_path: Path) -> None:
    """The service config example is a valid config when systemd provides the credential, and its
    state_dir is the unit's StateDirectory (the only writable place under ProtectSystem=strict)."""
    (tmp_path / "cryptolisting_api_key").write_text("dsk_example_key_0123456789\n")
    cfg = config.loads(
        CONFIG_EXAMPLE.read_text(), str(CONFIG_EXAMPLE), env={"CREDENTIALS_DIRECTORY": str(tmp_path)}
    )
    assert cfg.trading.dry_run
    (state,) = settings(UNIT)["StateDirectory"]
    assert cfg.state_dir == Path("/var/lib") / state
    assert cfg.log.format == "json"


@pytest.mark.parametrize("drop_in", DROP_INS, ids=lambda p: p.name)
def test_drop_in_examples_keep_python_as_the_command(drop_in: Path) -> None:
    """A drop-in that changes ExecStart= first clears it, then runs the venv python directly."""
    exec_start = settings(drop_in).get("ExecStart", [])
    if exec_start:
        assert exec_start[0] == ""
        assert all(shlex.split(line)[0] == "/opt/bridge/.venv/bin/python" for line in exec_start[1:])
        assert len(exec_start) == 2
