"""The public API: `bridge` re-exports what a plugin author needs, each name resolves, and the plugin
code we ship or generate (bundled strategies, the template and its test, the guide) imports only it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import bridge
from bridge.templates import new_strategy

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = {
    "Announcement",
    "Context",
    "ExitPlan",
    "Market",
    "OrderOutcome",
    "OrderResult",
    "Strategy",
    "TakeProfitTier",
    "load_config_text",
    "run_replay",
}


def _bridge_imports(source: str) -> set[str]:
    """Every module under `bridge` that `source` imports (`from bridge import X` counts as `bridge`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bridge":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "bridge"}
    return found


def test_public_names_resolve_and_nothing_else_is_advertised() -> None:
    """`bridge.__all__` is exactly the plugin API, and every name in it imports."""
    assert set(bridge.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(bridge, name) is not None


def test_an_internal_name_is_not_public() -> None:
    """Internals (the router, the journal) are not reachable as `bridge.X`."""
    for name in ("OrderRouter", "Journal", "Exchange"):
        assert not hasattr(bridge, name)


def test_bundled_strategies_import_only_bridge() -> None:
    """strategies/*.py name no module of bridge but `bridge` itself."""
    for path in (ROOT / "strategies").glob("*.py"):
        assert _bridge_imports(path.read_text()) <= {"bridge"}, path


def test_template_and_its_test_import_only_bridge(tmp_path: Path) -> None:
    """`bridge new-strategy` writes a plugin and a test that import only the public API."""
    plugin, test = new_strategy("my_play", tmp_path / "strategies", tmp_path / "tests")
    assert _bridge_imports(plugin.read_text()) == {"bridge"}
    assert _bridge_imports(test.read_text()) == {"bridge"}


def test_guide_code_imports_only_bridge() -> None:
    """Every Python block in docs/strategies.md imports only from `bridge`."""
    guide = (ROOT / "docs" / "strategies.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, re.S)
    assert blocks
    for block in blocks:
        imports = {
            line.split()[1]
            for line in block.splitlines()
            if line.startswith(("from bridge", "import bridge"))
        }
        assert imports <= {"bridge"}, imports
