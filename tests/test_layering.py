"""The package's layers hold: data < model < train / infer < contacts < cli, and the model knows nothing of how it
is run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "msaformer"
# what each layer may import of msaformer (top-level helpers: errors, config, files, progress, plotting, ...)
ALLOWED = {
    "data": {"data"},
    "model": {"data", "model"},
    "train": {"data", "model", "train"},
    "infer": {"data", "model", "infer"},
    "contacts": {"data", "model", "infer", "contacts"},  # contact checks: structures, baselines, head fitting
    "cli": {"data", "model", "train", "infer", "contacts", "cli"},
}
LAYERS = set(ALLOWED)


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":  # launcher entry points (like the console script) run the CLI
            continue
        yield path


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_lower_layers(path):
    rel = path.relative_to(PACKAGE)
    layer = rel.parts[0] if len(rel.parts) > 1 else None  # None: a top-level helper (errors, files, ...)
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] != "msaformer" or len(parts) < 2:
            continue
        target = parts[1]
        if target not in LAYERS:
            continue  # errors, config, files, progress, plotting, evaluation, demo: below every layer
        if layer is None:
            assert False, f"{rel} (a top-level helper) imports {name}"
        assert target in ALLOWED[layer], f"{rel} ({layer}) imports {name}"


def test_model_has_no_execution_code():
    # no checkpointing, compilation or distributed code in model/: train/execution.py applies them from outside
    forbidden_modules = ("torch.utils.checkpoint", "torch.distributed", "deepspeed", "torch._dynamo")
    for path in (PACKAGE / "model").glob("*.py"):
        tree = ast.parse(path.read_text())
        for name in _imports(path):
            assert not name.startswith(forbidden_modules), f"model/{path.name} imports {name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("checkpoint", "compile", "distributed"):
                owner = ast.unparse(node.value)
                assert owner not in ("torch", "torch.utils", "torch.utils.checkpoint") and owner != "self", (
                    f"model/{path.name} uses {owner}.{node.attr}"
                )
