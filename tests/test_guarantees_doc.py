"""docs/guarantees.md names the tests behind each promise: every file and test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "guarantees.md"


def _named() -> list[tuple[str, str | None]]:
    """(test file, test name or None) for every `path.py` / `path.py::name` / `::name` the doc cites;
    a bare `::name` belongs to the last file named before it."""
    out: list[tuple[str, str | None]] = []
    last = ""
    for code in re.findall(r"`([^`]+)`", DOC.read_text()):
        m = re.fullmatch(r"((?:[a-z_]+/)*test_[a-z_]+\.py)?(?:::(\w+))?", code)
        if m is None or not (m.group(1) or m.group(2)):
            continue
        last = m.group(1) or last
        out.append((last, m.group(2)))
    return out


def test_every_test_the_guarantees_name_exists() -> None:
    named = _named()
    assert len(named) > 40
    missing = []
    for file, name in named:
        path = ROOT / "tests" / file
        if not path.is_file() or (name is not None and not re.search(rf"^def {name}\(", path.read_text(), re.M)):
            missing.append(f"{file}::{name}" if name else file)
    assert missing == []
