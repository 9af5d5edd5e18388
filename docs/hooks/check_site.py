"""MkDocs hook of the docs build: a page whose HTML still shows a Sphinx role as text fails the build.

``docs/hooks/sphinx_roles.py`` turns the roles of the docstrings into cross-references; a role it could not
resolve (a misspelt or removed target) stays as text, which Markdown renders as ``:func:<code>name</code>``.
This hook runs on every page that ``mkdocs build`` writes and stops the build naming the page and the roles,
so ``make docs`` (and CI) fail instead of publishing them. Loaded by ``mkdocs.yml`` (``hooks``).
"""

from __future__ import annotations

import re
from typing import Any

from mkdocs.exceptions import PluginError

RAW_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|exc|obj|const):(?:<code>[^<]*</code>|`[^`]*`)")
"""A role as Markdown renders it (``:func:<code>x</code>``), or still in backticks (inside a code block)."""


def raw_roles(html: str) -> list[str]:
    """The Sphinx roles shown as text in a page's HTML, in order."""
    return RAW_ROLE.findall(html)


def on_post_page(output: str, *, page: Any, config: Any) -> str:
    """Refuse a page that shows raw roles (see the module); return the page unchanged otherwise."""
    found = raw_roles(output)
    if found:
        shown = ", ".join(sorted(set(found))[:10])
        raise PluginError(
            f"{page.file.src_uri}: {len(found)} Sphinx role(s) rendered as text, not as links: {shown} "
            "(docs/hooks/sphinx_roles.py could not resolve their targets)"
        )
    return output
