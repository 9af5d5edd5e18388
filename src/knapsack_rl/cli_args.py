"""Command-line flags generated from the config dataclasses, so no default is typed twice.

Every scalar field of a config dataclass becomes ``--field-name`` with its type, its choices (for a
``Literal``), ``--flag / --no-flag`` for a bool, ``none`` accepted for an optional field, and the
field's docstring and default as its help. Flags default to "not given" (None), so only what the
user typed overrides the config file.
"""

from __future__ import annotations

import argparse
import ast
import collections
import dataclasses
import inspect
import itertools
import re
import textwrap
import types
import typing
from collections.abc import Iterable
from functools import cache
from typing import Any


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of the dataclass ``cls`` (PEP 257 attribute docstrings), as one plain line.

    ReST markup is dropped for a terminal: ``x`` and :role:`x` become x. Empty when the source is unavailable.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            text = " ".join(inspect.cleandoc(nxt.value.value).split())
            docs[node.target.id] = re.sub(r":\w+:`~?([^`]+)`|``([^`]+)``", lambda m: m.group(1) or m.group(2), text)
    return docs


def _parse_optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_flags(
    parser: argparse.ArgumentParser | Any, cls: type, *, defaults: Any = None, skip: Iterable[str] = ()
) -> list[str]:
    """Add one flag per scalar field of dataclass ``cls``; returns the field names added.

    ``defaults`` (an instance) supplies the defaults shown in the help (default: ``cls()``).
    Nested dataclass fields and those in ``skip`` are left out.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    shown = defaults if defaults is not None else cls()
    added = []
    for f in dataclasses.fields(cls):
        if f.name in set(skip) or dataclasses.is_dataclass(getattr(shown, f.name)):
            continue
        kwargs = _flag_kwargs(hints[f.name])
        if kwargs is None:
            continue
        default = getattr(shown, f.name)
        help_text = f"{docs.get(f.name, '')} (default: {default!r})".replace("%", "%%")
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None, help=help_text, **kwargs)
        added.append(f.name)
    return added


def _flag_kwargs(hint: Any) -> dict[str, Any] | None:
    """argparse keywords for a field type (None for types without a flag)."""
    args = typing.get_args(hint)
    optional = (typing.get_origin(hint) in (typing.Union, types.UnionType)) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(base) is typing.Literal:
        return {"choices": list(typing.get_args(base))}
    if base in (int, float, str):
        return {"type": _parse_optional(base) if optional else base, "metavar": base.__name__.upper()}
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        return {"type": item, "nargs": "+", "metavar": item.__name__.upper()}
    return None


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The flags among ``names`` that the user gave (not None), as ``{field: value}``; tuples for lists."""
    out = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value read as YAML 1.2: numbers such as ``1e-4``, true/false,
    null, lists; :func:`knapsack_rl.safe_yaml.parse_yaml_text`). A missing ``=`` or an empty key part
    (``a..b``, ``.a``) raises ``ValueError`` naming the option."""
    from knapsack_rl.safe_yaml import parse_yaml_text

    if "=" not in text:
        raise ValueError(f"--set takes key=value (dotted keys for nested settings); got {text!r}")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(part.strip() for part in path):
        raise ValueError(f"--set {text!r}: the key {key.strip()!r} has an empty part; use a.b.c=value")
    return [part.strip() for part in path], parse_yaml_text(raw, source=f"--set {text!r}")


def set_path(values: dict[str, Any], path: list[str], value: Any, *, text: str) -> None:
    """Set ``values[path[0]]...[path[-1]] = value`` in a nested dict, creating missing sections.

    Raises:
        ValueError: naming ``text`` (the ``--set`` item) when a section on the way is a setting, not a
            section (``--set seed.x=1``: ``seed`` is 0). ``values`` is unchanged then.
    """
    node = values
    for depth, part in enumerate(path[:-1]):
        child = node.get(part, {})
        if not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            raise ValueError(f"--set {text!r}: {where} is a setting ({where}={child!r}), not a section with keys")
        node = child
    created = values
    for part in path[:-1]:  # every section on the way is a dict or missing: create the missing ones now
        created = created.setdefault(part, {})
    created[path[-1]] = value


def parse_seeds(text: str, *, option: str = "--seeds") -> list[int]:
    """``0 1 2`` / ``0,1,2`` style items or inclusive ranges ``0..9``, in the order given.

    Raises:
        ValueError: one line naming ``option`` and ``text``: an item that is not a whole number >= 0, an
            empty range (``5..1``), a seed given twice, or no seed at all.
    """
    out: list[int] = []
    for part in text.replace(",", " ").split():
        lo, sep, hi = part.partition("..")
        bounds = [_seed(option, text, lo), *([_seed(option, text, hi)] if sep else [])]
        if bounds[-1] < bounds[0]:
            raise ValueError(f"{option} {text!r}: the range {part} is empty (a range goes up: {hi}..{lo})")
        out.extend(range(bounds[0], bounds[-1] + 1))
    if not out:
        raise ValueError(f"{option} {text!r}: no seed given; e.g. {option} '0 1 2' or {option} 0..4")
    twice = [seed for seed, count in collections.Counter(out).items() if count > 1]
    if twice:
        raise ValueError(f"{option} {text!r}: seed {twice[0]} is given twice")
    return out


def _seed(option: str, text: str, item: str) -> int:
    if not re.fullmatch(r"[0-9]+", item.strip()):
        raise ValueError(f"{option} {text!r}: {item!r} is not a seed (a whole number >= 0)")
    return int(item)
