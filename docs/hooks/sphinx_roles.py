"""Griffe extension of the docs build: Sphinx cross-reference roles in docstrings become mkdocstrings links.

The docstrings are written for ``help()`` and for Sphinx-style readers: ``:func:`allocate```,
``:meth:`~knapsack_rl.rules.interface.Rule.needs```, ``:mod:`knapsack_rl.core.solve```. mkdocstrings does not
read these roles, so the API page would show them as text. Once griffe has loaded the package, every role whose
target resolves (like Sphinx's Python domain: the enclosing class, then the enclosing modules, then the path
from the top of the package; imported names followed to where they are defined) is rewritten in place as a
cross-reference to the target's canonical path, titled as Sphinx titles it (``~`` keeps the last name only).
The cross-reference is *optional* (mkdocs-autorefs' own kind, which mkdocstrings uses for annotations): a
link where the target is documented on the site, the name in code font where it is not.

A role whose target does not resolve is left as it was and logged; ``docs/hooks/check_site.py`` fails the build
if any role text reaches a page of the site. Loaded by ``mkdocs.yml`` (mkdocstrings' ``extensions`` option),
only by the docs build.
"""

from __future__ import annotations

import html
import re
import sys
from collections.abc import Iterator
from typing import Any

import griffe

ROLE = re.compile(
    r":(?:py:)?(?P<role>func|meth|class|mod|attr|data|exc|obj|const):`(?P<tilde>~?)(?P<target>\.?\w+(?:\.\w+)*)`"
)
"""A Sphinx cross-reference role of the Python domain, e.g. ``:meth:`~pkg.mod.Class.method```."""


def _final(obj: Any) -> griffe.Object | None:
    """``obj``, or where the name it imports is defined (None when that is outside the loaded packages)."""
    if not obj.is_alias:
        return obj  # type: ignore[no-any-return]
    try:
        return obj.final_target  # type: ignore[no-any-return]
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _lookup(scope: griffe.Object, path: str) -> griffe.Object | None:
    """The object ``path`` names inside ``scope`` (imports followed to their definition), or None."""
    obj: griffe.Object | None = scope
    for name in path.split("."):
        obj = _final(obj.members.get(name)) if name in obj.members else None
        if obj is None:
            return None
    return obj


def _scopes(obj: griffe.Object) -> Iterator[griffe.Object]:
    """Where a role in ``obj``'s docstring looks its target up: ``obj`` itself when it has members (a class
    or a module), then each enclosing class and module up to the top of the package."""
    scope: griffe.Object | None = obj if (obj.is_class or obj.is_module) else obj.parent
    while scope is not None:
        yield scope
        scope = scope.parent


KINDS = {
    "func": griffe.Kind.FUNCTION,
    "meth": griffe.Kind.FUNCTION,
    "class": griffe.Kind.CLASS,
    "exc": griffe.Kind.CLASS,
    "mod": griffe.Kind.MODULE,
    "attr": griffe.Kind.ATTRIBUTE,
    "data": griffe.Kind.ATTRIBUTE,
    "const": griffe.Kind.ATTRIBUTE,
}
"""The kind of object each role names (``obj``: any)."""


def _of_kind(found: griffe.Object, role: str) -> griffe.Object | None:
    """``found`` if it is of the role's kind; for a module where the role names something else, the module's
    member of the same name (a package that re-exports ``allocate`` from its module ``allocate``: griffe takes
    the module, Python the function); else None."""
    kind = KINDS.get(role)
    if kind is None or found.kind is kind:
        return found
    if found.is_module:
        inner = _lookup(found, found.name)
        if inner is not None and inner.kind is kind:
            return inner
    return None


def resolve(obj: griffe.Object, role: str, target: str) -> str | None:
    """The canonical path of the object of the role's kind that a role in ``obj``'s docstring names, or None.

    Looked up like Sphinx's Python domain: in ``obj`` (a class or a module), then in each enclosing class and
    module, then as a path from the top of the package; a leading dot (``.hooks``) changes nothing here.
    """
    path = target.lstrip(".")
    root = obj.package
    places = [(scope, path) for scope in _scopes(obj)]
    if path.startswith(root.name + "."):
        places.append((root, path.removeprefix(root.name + ".")))
    elif path == root.name:
        return root.canonical_path
    for scope, name in places:
        found = _lookup(scope, name)
        match = _of_kind(found, role) if found is not None else None
        if match is not None:
            return match.canonical_path
    return None


def rewrite(obj: griffe.Object, text: str, unresolved: list[str]) -> str:
    """``text`` with every role that resolves from ``obj`` replaced by an optional autorefs cross-reference
    and every role naming the standard library by its name in code font (no link: the site has no inventory
    of Python's docs); the other roles are kept and appended to ``unresolved``."""

    def replace(match: re.Match[str]) -> str:
        target = match["target"]
        title = target.rsplit(".", 1)[-1] if match["tilde"] else target.lstrip(".")
        path = resolve(obj, match["role"], target)
        if path is not None:
            return f'<autoref identifier="{html.escape(path)}" optional>`{title}`</autoref>'
        if target.split(".", 1)[0] in sys.stdlib_module_names:
            return f"`{title}`"
        unresolved.append(match[0])
        return match[0]

    return ROLE.sub(replace, text)


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    """``obj`` and every object defined inside it (imported names are left to where they are defined)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)  # type: ignore[arg-type]


class SphinxRoles(griffe.Extension):
    """Rewrites Sphinx roles in every docstring of a package once griffe has loaded it (see the module)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the roles of every docstring in ``pkg``; log the roles whose target does not resolve."""
        for obj in _objects(pkg):
            if obj.docstring is None:
                continue
            unresolved: list[str] = []
            text = rewrite(obj, obj.docstring.value, unresolved)
            if text != obj.docstring.value:
                obj.docstring.value = text
                obj.docstring.__dict__.pop("parsed", None)  # parsed lazily; drop a parse of the old text
            for role in unresolved:
                griffe.logger.debug("%s: %s does not resolve; left as text", obj.path, role)
