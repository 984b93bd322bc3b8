"""The dependency rule: app.py, train/ and hub/ stand on the core (deepfake_detector/) and never on each other.

    python -m pytest tests/test_layers.py

Checked twice: statically (every import statement in every file, including the lazy ones inside functions),
and by importing each layer in a fresh interpreter and looking at what it pulled in.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"deepfake_detector", "train", "hub", "app", "tests", "helpers", "bench"}
# What each layer may import from the project (besides itself).
ALLOWED = {
    "deepfake_detector": set(),
    "train": {"deepfake_detector"},
    "hub": {"deepfake_detector"},
    "app": {"deepfake_detector"},
    "bench": {"deepfake_detector", "train", "hub", "app"},
}


def layer_files(layer):
    return [ROOT / "app.py"] if layer == "app" else sorted((ROOT / layer).rglob("*.py"))


def imported_roots(path):
    """The top-level names of every module `path` imports, wherever the import statement is."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_import_statement_crosses_the_rule(layer):
    for path in layer_files(layer):
        crossing = (imported_roots(path) & PROJECT) - ALLOWED[layer] - {layer}
        assert not crossing, f"{path.relative_to(ROOT)} imports {sorted(crossing)}"


def test_the_ensembles_modeling_file_imports_only_torch_timm_transformers():
    # It is copied into every saved ensemble folder and run as remote code, without this project installed.
    roots = imported_roots(ROOT / "deepfake_detector" / "modeling_deepfake_ensemble.py")
    assert roots <= {"torch", "timm", "transformers"}, roots


def test_benches_import_the_package_without_path_edits():
    for path in sorted((ROOT / "bench").glob("*.py")):
        text = path.read_text()
        assert "sys.path" not in text, f"{path.name} edits sys.path: import the installed package (pip install -e .)"
        assert not imported_roots(path) & {"tests", "helpers"}, f"{path.name} imports the tests"


def _pulled_in(modules):
    """The project packages a fresh interpreter holds after importing `modules` (run from outside the repo's tests)."""
    script = ("import importlib, json, sys\n"
              f"for name in {modules!r}: importlib.import_module(name)\n"
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1])) & PROJECT


def _modules(package):
    return [f"{package}.{p.stem}" for p in sorted((ROOT / package).glob("*.py")) if p.stem != "__main__"]


@pytest.mark.parametrize("layer, modules", [
    ("deepfake_detector", _modules("deepfake_detector")),
    ("train", _modules("train")),
    ("hub", _modules("hub")),
    ("app", ["app"]),
])
def test_importing_a_layer_pulls_in_only_what_it_may(layer, modules):
    assert _pulled_in(modules) == {layer} | ALLOWED[layer]
