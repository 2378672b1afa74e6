"""The Python snippets of README.md and docs/*.md: they parse, import every name they use that is not a stand-in
for the reader's own objects (``model``, ``loader``, ...), and every automix name they import or reach exists.

A snippet is meant to be copied into the reader's code, where ``loader`` and ``model`` are theirs; automix's
own functions (``soft_target_cross_entropy``) and modules (``torch``, ``automix``) must come with their import,
or the copied snippet fails with a NameError.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The reader's own objects, which a snippet only stands in for.
STAND_INS = {"loader", "model", "train_set", "val_set", "device", "epochs", "evaluate", "dataset"}
AUTOMIX_MODULES = ("automix", "automix.losses", "automix.mixers", "automix.methods", "automix.models",
                   "automix.context", "automix.collate", "automix.viz")


def snippets() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{path.name}:{line}", match.group(1)))
    return found


SNIPPETS = snippets()


def public_names() -> set[str]:
    """automix's functions and classes by the names a snippet would use (those of its main modules)."""
    names = set()
    for name in AUTOMIX_MODULES:
        module = importlib.import_module(name)
        names |= set(getattr(module, "__all__", ()))
        names |= {k for k, v in vars(module).items()
                  if not k.startswith("_") and getattr(v, "__module__", "").startswith("automix")}
    return names


def bound_and_loaded(tree: ast.AST) -> tuple[set[str], set[str], dict[str, str]]:
    """Names the snippet binds, names it reads, and the modules it imports by local name."""
    bound, loaded, modules = set(), set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                bound.add(local)
                modules[local] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                bound.add(alias.asname or alias.name)
        elif isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, (ast.Store, ast.Del)) else loaded).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return bound, loaded, modules


def test_the_docs_have_python_snippets():
    assert len(SNIPPETS) >= 4, [where for where, _ in SNIPPETS]


@pytest.mark.parametrize(("where", "code"), SNIPPETS, ids=[where for where, _ in SNIPPETS])
def test_a_snippet_imports_what_it_uses_and_names_what_exists(where, code):
    tree = ast.parse(code, filename=where)
    compile(tree, where, "exec")
    bound, loaded, modules = bound_and_loaded(tree)
    free = loaded - bound - set(dir(builtins))
    public = public_names()
    unimported = sorted(free & public)
    assert not unimported, f"{where} uses automix's {unimported} without importing it"
    unknown = sorted(free - STAND_INS)
    assert not unknown, f"{where} uses {unknown} without importing or defining it"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "automix":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and modules.get(value.id) == "automix":
                obj = importlib.import_module("automix")
                for attr in reversed(chain):
                    assert hasattr(obj, attr), f"{where}: automix.{'.'.join(reversed(chain))} does not exist"
                    obj = getattr(obj, attr)
