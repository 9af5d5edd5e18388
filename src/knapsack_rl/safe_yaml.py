"""The package's one YAML reader: configs and ``--set`` values, read strictly and in bounded time and memory.

Every YAML the package reads from a user (``knapsack-rl train --config``, the TRL launcher's ``--config``,
``--set key=value`` and ``+key=value`` in arm names) goes through :func:`load_yaml_file` or
:func:`parse_yaml_text`. Compared with ``yaml.safe_load``:

- **Anchors and aliases are refused** (``&name``, ``*name``): a "billion laughs" document, a few hundred
  bytes that expand to gigabytes, is rejected at its first anchor instead of taking minutes and all memory.
  Merge keys (``<<: *base``) need an alias and are refused with it.
- **Duplicate keys are refused**, naming the key and both lines (``yaml.safe_load`` keeps the last one).
- **Scalars follow the YAML 1.2 core schema**, not PyYAML's YAML 1.1: ``1e-4`` and ``5E3`` are floats
  (1.1 reads them as strings), only ``true`` / ``false`` (any case style: ``True``, ``TRUE``) are booleans
  (``yes``, ``no``, ``on``, ``off`` stay strings, so ``resume: no`` is refused by the config's bool check
  instead of silently becoming False), ``010`` is the integer 10 (not octal 8), ``0o17`` and ``0x1f`` are
  octal and hex, ``1_000``, ``1:30`` and ``2024-01-01`` are strings (1.1: 1000, 90 and a date).
- **Only plain data is built**: mappings, sequences, strings, integers, floats, booleans and null; any
  other tag (``!!python/...``, ``!!binary``, ``!!set``, ``!!timestamp``) is refused.
- **Files are capped** at :data:`MAX_YAML_BYTES` and read with :func:`knapsack_rl.io.read_file_bytes`
  (regular files only: a FIFO or a folder is refused without blocking); a document nested deeper than
  Python's recursion limit is refused too.

Every error is one ``ValueError`` line naming the file and the line (``config.yaml:7: duplicate key 'lr'
(first on line 3)``); for a ``--set`` value it names the option and the column.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, ClassVar

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode

from knapsack_rl.io import read_file_bytes

MAX_YAML_BYTES = 1 << 20
"""Largest YAML file read (1 MiB): a config is a few kilobytes."""

_CORE = "tag:yaml.org,2002:"
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core schema, no anchors or aliases, no duplicate keys, plain data only."""

    # PyYAML's per-class tables, filled once below at import and only read afterwards
    yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {}
    yaml_constructors: ClassVar[dict[Any, Any]] = {}

    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConstructorError(None, None, "anchors and aliases (&name, *name) are not allowed", event.start_mark)
        return super().compose_node(parent, index)  # type: ignore[no-any-return]

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:  # type: ignore[override]
        if not isinstance(node, MappingNode):
            raise ConstructorError(None, None, f"expected a mapping, found {node.id}", node.start_mark)
        out: dict[Any, Any] = {}
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise ConstructorError(
                    None, None, "a mapping key must be a scalar, not a list or mapping", key_node.start_mark
                ) from None
            if key in first:
                problem = f"duplicate key {key!r} (first on line {first[key]})"
                raise ConstructorError(None, None, problem, key_node.start_mark)
            first[key] = key_node.start_mark.line + 1
            out[key] = self.construct_object(value_node, deep=deep)
        return out

    def construct_core_int(self, node: ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text)

    def construct_core_float(self, node: ScalarNode) -> float:
        text = str(self.construct_scalar(node)).lower()
        if text.endswith(".inf"):
            return -math.inf if text.startswith("-") else math.inf
        if text == ".nan":
            return math.nan
        return float(text)

    def construct_undefined(self, node: Node) -> None:
        raise ConstructorError(None, None, f"tag {node.tag!r} is not allowed (plain data only)", node.start_mark)


_StrictLoader.add_implicit_resolver(_CORE + "null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_StrictLoader.add_implicit_resolver(_CORE + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_StrictLoader.add_implicit_resolver(_CORE + "int", _INT, list("-+0123456789"))
_StrictLoader.add_implicit_resolver(_CORE + "float", _FLOAT, list("-+.0123456789"))
for _tag, _construct in (
    ("null", SafeConstructor.construct_yaml_null),
    ("bool", SafeConstructor.construct_yaml_bool),
    ("int", _StrictLoader.construct_core_int),
    ("float", _StrictLoader.construct_core_float),
    ("str", SafeConstructor.construct_yaml_str),
    ("seq", SafeConstructor.construct_yaml_seq),
    ("map", SafeConstructor.construct_yaml_map),
):
    _StrictLoader.add_constructor(_CORE + _tag, _construct)
_StrictLoader.add_constructor(None, _StrictLoader.construct_undefined)


def load_yaml_file(path: str | os.PathLike[str], *, what: str = "config file", max_bytes: int = MAX_YAML_BYTES) -> Any:
    """The plain data of the YAML file ``path`` (None for an empty document); see the module docstring.

    Raises:
        ValueError: one line naming ``what`` or the file and the line: missing, not a regular file,
            over ``max_bytes``, not UTF-8, a syntax error, an anchor or alias, a duplicate key, a tag
            other than plain data, nested too deeply.
    """
    data = read_file_bytes(path, what=what, max_bytes=max_bytes)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"{os.fspath(path)}:{line}: not valid UTF-8 ({exc.reason})") from None
    return _load(text, os.fspath(path), inline=False)


def parse_yaml_text(text: str, *, source: str) -> Any:
    """The plain data of one YAML value given inline (``--set lr=1e-4``: ``1e-4`` -> 0.0001).

    ``source`` names where the text came from in errors (``--set 'lr=[1'``). Same rules as
    :func:`load_yaml_file`; an empty text is None.
    """
    return _load(text, source, inline=True)


def _load(text: str, source: str, *, inline: bool) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(exc.problem or exc.context or "malformed YAML").split())
        if exc.context and exc.problem and "not allowed" not in problem and "duplicate" not in problem:
            problem = f"{' '.join(exc.context.split())}: {problem}"
        raise ValueError(_where(source, mark, inline) + problem) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n")
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
        where = _where(source, yaml.Mark(source, exc.position, line, column, None, None), inline)
        raise ValueError(f"{where}character #x{exc.character:04x} is not allowed in YAML ({exc.reason})") from None
    except RecursionError:
        raise ValueError(f"{source}: YAML nested too deeply") from None
    except yaml.YAMLError as exc:  # any other YAML error: one line
        raise ValueError(f"{source}: malformed YAML ({' '.join(str(exc).split())})") from None


def _where(source: str, mark: Any, inline: bool) -> str:
    if mark is None:
        return f"{source}: "
    if not inline:
        return f"{source}:{mark.line + 1}: "
    if mark.line == 0:
        return f"{source}: at column {mark.column + 1}: "
    return f"{source}: at line {mark.line + 1}, column {mark.column + 1}: "
