"""The README's quick start: `python -m bridge demo` runs the emulator, a fake Binance and the real
daemon in paper mode, prints the paper orders and exits 0, with no account and no network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_places_three_paper_orders_and_exits_0(tmp_path: Path) -> None:
    """Run from another directory (as a user might), the demo finds the bundled strategies, places
    the three paper buys of its script and nothing else, and exits 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Not on a terminal: stdout is the JSON log, the human summary is on stderr (bridge.ops.console).
    assert "3 orders." in proc.stderr
    table = [line for line in proc.stderr.splitlines() if line.startswith("  listing_buy")]
    assert len(table) == 3 and all(line.rstrip().endswith("paper") for line in table)
    assert "Traceback" not in proc.stderr
