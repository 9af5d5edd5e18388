"""docs/index.md, the site's home page: it states the verdict with the numbers docs/evidence.md gives, and links
the quick starts, the evidence, the guarantees and the glossary."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
HOME = DOCS / "index.md"


def _section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section of a Markdown page (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match is not None, f"{HOME.name} has no '## {heading}' section"
    return match.group(1)


def test_the_home_page_links_the_quick_starts_evidence_guarantees_and_glossary() -> None:
    targets = {link.split("#")[0] for link in re.findall(r"\]\(([^)\s]+)\)", HOME.read_text())}
    assert {"quickstart.md", "evidence.md", "guarantees.md", "glossary.md"} <= targets
    assert all((DOCS / target).is_file() for target in targets if not target.startswith(("http:", "https:")))


def test_the_home_page_states_the_verdict_with_the_evidence_pages_numbers() -> None:
    verdict = _section(HOME.read_text(), "The verdict")
    assert "no allocator beats uniform on held-out accuracy" in verdict
    cited = re.findall(r"[+-]?\d+(?:\.\d+)? ± \d+(?:\.\d+)?", verdict)
    assert len(cited) >= 10  # the held-out AUC differences of both rounds, and what allocation buys
    evidence = (DOCS / "evidence.md").read_text()
    assert [c for c in cited if c not in evidence] == []  # every mean ± CI exactly as the evidence gives it
