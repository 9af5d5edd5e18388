"""Packaging tells the truth: extras cover what the code imports, and TRL and verl run on their declared pins.

The extras are read from ``pyproject.toml`` (the source of truth, not a possibly stale installed copy); what
a distribution requires is read from the installed metadata of the environment the tests run in.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "knapsack_rl"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]

# Which extras must cover the imports of each part of the package (the first matching prefix wins).
# A part not listed here must be covered by the union of every runtime extra.
PART_EXTRAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core/", ()),
    ("sim/", ("plot",)),
    ("report/", ("plot",)),
    ("integrations/trl/", ("trl",)),
    ("integrations/verl/", ("verl",)),
)
RUNTIME_EXTRAS = tuple(name for name in EXTRAS if name not in ("dev", "docs"))


def _marker_env(extra: str) -> dict[str, str]:
    env = dict(default_environment())
    env["extra"] = extra
    return env


def _own_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """knapsack-rl's base dependencies plus those of ``extras`` (self-references expanded)."""
    out = [Requirement(r) for r in PROJECT["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in EXTRAS[extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "knapsack-rl":
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


@cache
def _closure(extras: tuple[str, ...]) -> frozenset[str]:
    """Canonical names of every installed distribution that ``extras`` pull in, transitively."""
    names: set[str] = set()
    todo = [(req.name, tuple(sorted(req.extras))) for req in _own_requirements(extras)]
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        if key in names:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here (e.g. a marker-excluded dependency): it cannot cover an import
        names.add(key)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate(_marker_env(e)) for e in ("", *wanted)):
                todo.append((req.name, tuple(sorted(req.extras))))
    return frozenset(names)


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (lazy imports inside functions included)."""
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            mods.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods.add(node.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m not in ("knapsack_rl", "__future__")}


def _extras_for(relative: str) -> tuple[str, ...]:
    for prefix, extras in PART_EXTRAS:
        if relative.startswith(prefix):
            return extras
    return RUNTIME_EXTRAS


def test_every_import_in_src_is_installed_by_the_extras_that_claim_it() -> None:
    providers = metadata.packages_distributions()
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        extras = _extras_for(relative)
        allowed = _closure(extras)
        for module in sorted(_third_party_imports(path)):
            dists = {canonicalize_name(d) for d in providers.get(module, [])}
            if not dists & allowed:
                missing.append(f"{relative}: import {module} (from {sorted(dists) or '?'}) not in [{','.join(extras)}]")
    assert not missing, "\n".join(missing)


def test_plot_extra_and_core_do_not_pull_torch() -> None:
    assert "torch" not in _closure(("plot",))
    assert "torch" not in _closure(())


@pytest.mark.parametrize("framework", ["trl", "verl"])
def test_installed_framework_runs_on_its_declared_pins(framework: str) -> None:
    """Every unconditional requirement of the installed TRL / verl is met here (what pip's resolver checks)."""
    dist = metadata.distribution(framework)
    broken = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(_marker_env("")):
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            broken.append(f"{req} (not installed)")
            continue
        if not req.specifier.contains(Version(installed), prereleases=True):
            broken.append(f"{req} (installed {installed})")
    assert not broken, f"{framework} {dist.version} declares: " + "; ".join(broken)


def test_verl_and_trl_extras_pin_the_supported_series() -> None:
    verl = next(Requirement(r) for r in EXTRAS["verl"] if canonicalize_name(Requirement(r).name) == "verl")
    assert verl.specifier == SpecifierSet(">=0.9.1,<0.10")
    trl = next(Requirement(r) for r in EXTRAS["trl"] if canonicalize_name(Requirement(r).name) == "trl")
    assert trl.specifier == SpecifierSet(">=1.16,<1.17")
    assert metadata.version("verl") in verl.specifier
    assert metadata.version("trl") in trl.specifier


def _floor(spec: SpecifierSet) -> Version | None:
    floors = [Version(s.version) for s in spec if s.operator in (">=", "==", "~=")]
    return max(floors) if floors else None


def test_trl_extra_floors_are_at_least_trls_own() -> None:
    """Each package named in [trl] has a floor no lower than the one installed TRL declares for it."""
    ours = {canonicalize_name(Requirement(r).name): Requirement(r) for r in EXTRAS["trl"]}
    low = []
    for text in metadata.distribution("trl").requires or []:
        theirs = Requirement(text)
        if theirs.marker is not None or canonicalize_name(theirs.name) not in ours:
            continue
        their_floor, our_floor = _floor(theirs.specifier), _floor(ours[canonicalize_name(theirs.name)].specifier)
        if their_floor is not None and (our_floor is None or our_floor < their_floor):
            low.append(f"{theirs.name}: ours {our_floor}, TRL's {their_floor}")
    assert not low, "; ".join(low)


def test_requires_python_is_no_lower_than_the_frameworks_need() -> None:
    ours = _floor(SpecifierSet(PROJECT["requires-python"]))
    assert ours is not None
    for framework in ("trl", "verl"):
        theirs = metadata.metadata(framework)["Requires-Python"]
        assert SpecifierSet(theirs).contains(ours), f"{framework} requires Python {theirs}; we declare >= {ours}"


def test_license_is_spdx_with_its_file() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert re.search(r"Copyright 2026 the knapsack-rl authors", text)


@pytest.mark.filterwarnings("ignore")  # verl warns about every GPU engine it cannot load on CPU
@pytest.mark.parametrize("adapter", ["trl", "verl"])
def test_every_adapter_module_imports_on_cpu(adapter: str) -> None:
    """Each module of the adapter imports here, the hook classes verl loads by name (``hooks``) included."""
    package = importlib.import_module(f"knapsack_rl.integrations.{adapter}")
    names = [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    assert names
    for name in names:
        importlib.import_module(name)
