"""The layering of the package (docs/architecture.md), checked on the source and at run time.

Lower layers never import upper ones, not even lazily inside a function; the torch-free layers
(config, results, utils) import neither torch, timm nor ray, so ``ofasearch status``/``report``
start fast and read old results folders without re-validating them against today's timm.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ofasearch"

# What each part of the package may import from ofasearch (its own modules always).
BASE = {"errors", "utils"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "utils": {"errors"},
    "config": BASE,
    "results": BASE | {"config"},
    "models": BASE | {"config"},
    "data": BASE | {"config"},
    "distill": BASE | {"config", "models"},
    "training": BASE | {"config", "models", "data", "distill"},
    "cluster": BASE | {"config", "models", "data", "distill", "training"},
    "search": BASE | {"config", "models", "data", "distill", "training", "cluster", "results"},
}
TORCH_FREE = {"errors", "utils", "config", "results"}
HEAVY = {"torch", "torchvision", "timm", "ray", "safetensors"}
# No exception: the config layer checks model names through a function the package installs
# (ofasearch/__init__.py), not by importing the models layer.
EXCEPTIONS: set[tuple[str, str]] = set()


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names if node.module.startswith("ofasearch")}
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_lower_layers_never_import_upper_ones(path: Path):
    module, layer = _name(path), _layer(_name(path))
    if layer in ("cli", "__init__", "__main__"):  # the command line (and `python -m ofasearch`) is the top
        return
    problems = []
    for imported in sorted(_imports(path)):
        top = imported.split(".")[0]
        if top == "ofasearch":
            target = _layer(imported)
            excepted = any(module == m and (imported + ".").startswith(t + ".") for m, t in EXCEPTIONS)
            if target == "__init__" or target == layer or excepted:
                continue
            if target not in ALLOWED[layer]:
                problems.append(f"{module} imports {imported} ({layer} may import {sorted(ALLOWED[layer])})")
        elif layer in TORCH_FREE and top in HEAVY:
            problems.append(f"{module} imports {imported} ({layer} must not import {sorted(HEAVY)})")
        elif layer == "training" and top == "ray":
            problems.append(f"{module} imports {imported} (training runs without Ray; see cluster/)")
    assert not problems, "\n".join(problems)


def test_torch_free_layers_load_no_torch_at_run_time():
    """Importing every module of config, results and utils (and the CLI) loads none of the heavy packages."""
    names = [_name(p) for p in _modules() if _layer(_name(p)) in TORCH_FREE | {"cli"}]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
