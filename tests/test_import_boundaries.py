"""Readers and bridges install only what they need: their shared modules never import Flask or SQLAlchemy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("flask", "sqlalchemy")

DEVICE_SIDE_MODULES = [
    "gateway.contract",
    "gateway.core",
    "gateway.tokens",
    "gateway.site",
    "gateway.mqttlink",
    "gateway.jsonlog",
    "gateway.metrics_server",
    "readers.cli",
    "firmware_bridge.cli",
]


def forbidden_after_importing(module: str) -> list[str]:
    """Top-level packages from FORBIDDEN in sys.modules after importing `module` in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"[importlib.import_module(m) for m in {module!r}.split(';')]\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(FORBIDDEN)!r}))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def _all_modules(package: str) -> list[str]:
    folder = ROOT / package
    return sorted(
        f"{package}.{p.stem}" if p.stem != "__init__" else package
        for p in folder.glob("*.py")
        if p.stem != "__main__"
    )


@pytest.mark.parametrize("package", ["readers", "firmware_bridge"])
def test_every_module_of_the_device_packages_stays_clear(package: str) -> None:
    """The whole reader and bridge, as a device installs them: every module, imported together."""
    modules = _all_modules(package)
    assert len(modules) > 3
    assert forbidden_after_importing(";".join(modules)) == []


@pytest.mark.parametrize("module", DEVICE_SIDE_MODULES)
def test_device_side_module_imports_neither_flask_nor_sqlalchemy(module: str) -> None:
    assert forbidden_after_importing(module) == []


def test_the_check_sees_flask_when_it_is_imported() -> None:
    """The probe itself works: a module that does import Flask is caught."""
    assert forbidden_after_importing("flask") == ["flask"]


def test_flask_is_caught_among_several_modules() -> None:
    assert forbidden_after_importing("gateway.core;gateway.web") == ["flask", "sqlalchemy"]
