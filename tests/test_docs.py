"""The API reference builds from the docstrings, and every public function has one."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

MODULES = [
    "dicomframe",
    "dicomframe.scanner",
    "dicomframe.schema",
    "dicomframe.sources",
    "dicomframe.tags",
    "dicomframe.profiles",
    "dicomframe.keys",
    "dicomframe.pseudonyms",
    "dicomframe.planner",
    "dicomframe.rewrite",
    "dicomframe.pipeline",
    "dicomframe.distributed",
    "dicomframe.leaks",
    "dicomframe.phiaudit",
    "dicomframe.vault",
    "dicomframe.auditlog",
    "dicomframe.frames",
    "dicomframe.errors",
    "dicomframe.gateway",
    "dicomframe.gateway.http",
    "dicomframe.gateway.scp",
]


@pytest.mark.parametrize("name", MODULES)
def test_every_public_function_and_class_has_a_docstring(name: str) -> None:
    module = importlib.import_module(name)
    assert inspect.getdoc(module), f"{name} has no module docstring"
    missing = []
    for attr in getattr(module, "__all__", []):
        obj = getattr(module, attr, None)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and not inspect.getdoc(obj):
            missing.append(attr)
    assert not missing, f"{name}: no docstring on {missing}"


def test_the_api_reference_builds(tmp_path: Path) -> None:
    pytest.importorskip("pdoc")
    out = tmp_path / "api"
    subprocess.run(
        [sys.executable, "-m", "pdoc", "--docformat", "numpy", "-o", str(out), *MODULES],
        check=True,
        capture_output=True,
        timeout=300,
    )
    pages = {p.name for p in out.rglob("*.html")}
    assert "index.html" in pages and "scanner.html" in pages and "planner.html" in pages
    text = (out / "dicomframe" / "scanner.html").read_text()
    assert "def scan" in text or "scan(" in text
