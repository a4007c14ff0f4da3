"""The package itself: its version is the workspace's, and it needs no network to import."""

from __future__ import annotations

import re
from pathlib import Path

import splitup

ROOT = Path(__file__).resolve().parents[2]


def workspace_version() -> str:
    cargo = (ROOT / "Cargo.toml").read_text()
    section = cargo.split("[workspace.package]", 1)[1]
    return re.search(r'^version\s*=\s*"([^"]+)"', section, re.M).group(1)


def test_the_version_is_the_workspace_version():
    pyproject = (ROOT / "python" / "pyproject.toml").read_text()
    assert re.search(r'^version\s*=\s*"([^"]+)"', pyproject, re.M).group(1) == workspace_version()
    assert splitup.__version__ == workspace_version()
