"""The import contracts in pyproject.toml hold on this tree, and each one breaks on the bad import it
exists to stop: proven on a copy of the package with exactly that one import added."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# contract id -> (module to edit, the import it must refuse)
BAD_IMPORTS = {
    "feed-knows-nothing-downstream": ("bridge/feed/codec.py", "import bridge.trading.gate"),
    "ccxt-only-in-venues": ("bridge/trading/risk.py", "import ccxt"),
    "venues-below-trading": ("bridge/venues/fastpath.py", "import bridge.trading.gate"),
    "trading-below-ops": ("bridge/trading/gate.py", "import bridge.ops.logs"),
    "sim-stays-out-of-the-money-path": ("bridge/trading/orders.py", "import bridge.sim.emulator"),
    "nothing-imports-cli": ("bridge/sim/demo.py", "import bridge.cli"),
    "strategies-use-the-public-api": ("strategies/log_only.py", "import bridge.trading.journal"),
}


def _copy_tree(dest: Path) -> Path:
    for name in ("bridge", "strategies"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(cwd: Path, contract: str) -> subprocess.CompletedProcess[str]:
    # The copy must win over the editable install of the real tree: put it first on the path.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--contract", contract],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_every_contract_is_listed_here() -> None:
    """A contract added to pyproject.toml without a bad-import case here fails this test."""
    text = (ROOT / "pyproject.toml").read_text()
    ids = {line.split('"')[1] for line in text.splitlines() if line.startswith("id = ")}
    assert ids == set(BAD_IMPORTS)


@pytest.mark.parametrize("contract", sorted(BAD_IMPORTS))
def test_contract_kept_here_and_broken_by_its_bad_import(contract: str, tmp_path: Path) -> None:
    """Each contract passes on the real tree and fails, naming the offending import, once the one
    import it forbids is added to a copy."""
    tree = _copy_tree(tmp_path)
    clean = _lint(tree, contract)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    module, line = BAD_IMPORTS[contract]
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    broken = _lint(tree, contract)
    assert broken.returncode != 0, broken.stdout
    assert "BROKEN" in broken.stdout
    imported = line.split()[-1]
    assert imported in broken.stdout
