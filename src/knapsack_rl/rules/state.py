"""A rule's state in a state file: one format for every engine's checkpoint (NumPy-free, no pickle).

A rule keeps its state between steps as plain data (:meth:`~knapsack_rl.rules.interface.Rule.state_dict`:
ints, finite floats, strs, bools, None, bytes, lists and str-keyed dicts). :func:`pack_rule_state` turns
it into the two halves of :func:`knapsack_rl.io.encode_state_file`: JSON ``meta`` in which every bytes
value is replaced by ``{"$part": k}``, and the parts ``"rule/k"`` that hold those bytes (a tracker image,
for instance). :func:`unpack_rule_state` is its inverse. The reference trainer's checkpoint, TRL's and
verl's state files all store a rule this way, under the envelope's one SHA-256::

    meta, parts = pack_rule_state("knapsack", rule.state_dict())
    write_state_file(path, "rule-state", 1, {"rule": meta}, parts)
    ...
    name, state = unpack_rule_state(file.meta["rule"], file.parts, source=str(path))
    rule.load_state_dict(state, source=str(path))        # the rule validates every field

Nothing here trusts a file: a malformed reference, a missing or unused part, or a value that is not plain
data raises a one-line ValueError naming ``source``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

PART_KEY = "$part"
"""The one key of the JSON object that stands for a bytes value."""
PART_PREFIX = "rule/"
"""Names of the parts that hold a rule's bytes values: ``rule/0``, ``rule/1``, ..."""
MAX_DEPTH = 32
"""Deepest nesting of a rule state (a rule's state is shallow; a deeper one is refused, not recursed into)."""


def pack_rule_state(name: str, state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``({"name": name, "state": json_state}, parts)`` of a rule's state (see the module docstring).

    Raises:
        ValueError: naming the path of a value that is not plain data (a NaN, a tuple, a NumPy array, a
            dict key that is not a str or is ``"$part"``).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a rule's name must be a non-empty str; got {name!r}")
    parts: dict[str, bytes] = {}

    def walk(value: Any, where: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError(f"rule state of {name!r}: {where} is nested deeper than {MAX_DEPTH}")
        if isinstance(value, bytes | bytearray):
            key = f"{PART_PREFIX}{len(parts)}"
            parts[key] = bytes(value)
            return {PART_KEY: key}
        if isinstance(value, dict):
            bad = [k for k in value if not isinstance(k, str) or k == PART_KEY]
            if bad:
                raise ValueError(f"rule state of {name!r}: {where} has a key that is not a plain str: {bad[0]!r}")
            return {k: walk(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"rule state of {name!r}: {where} is {value!r}; a state holds finite floats only")
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise ValueError(f"rule state of {name!r}: {where} is a {type(value).__name__}, not plain data")

    if not isinstance(state, Mapping):
        raise ValueError(f"rule state of {name!r} must be a mapping; got {type(state).__name__}")
    return {"name": name, "state": walk(dict(state), "state", 0)}, parts


def unpack_rule_state(meta: Any, parts: Mapping[str, bytes], *, source: str) -> tuple[str, dict[str, Any]]:
    """``(name, state)`` from :func:`pack_rule_state`'s halves as read from a file.

    ``parts`` may hold other parts too (the trainer's tensors); every ``rule/k`` part must be referenced
    exactly once and every reference must name one.

    Raises:
        ValueError: one line naming ``source`` and what is wrong.
    """
    if not isinstance(meta, dict) or sorted(meta) != ["name", "state"]:
        got = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{source}: a rule's state must hold exactly 'name' and 'state'; got {got}")
    name, state = meta["name"], meta["state"]
    if not isinstance(name, str) or not name or not isinstance(state, dict):
        raise ValueError(f"{source}: a rule's state needs a str 'name' and a mapping 'state'; got name={name!r}")
    used: set[str] = set()

    def walk(value: Any, where: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError(f"{source}: rule state {where} is nested deeper than {MAX_DEPTH}")
        if isinstance(value, dict):
            if PART_KEY in value:
                return _part(value, where)
            return {k: walk(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        return value

    def _part(ref: dict[str, Any], where: str) -> bytes:
        key = ref[PART_KEY]
        if len(ref) != 1 or not isinstance(key, str) or key not in parts or not key.startswith(PART_PREFIX):
            raise ValueError(f"{source}: rule state {where} refers to a part that is not there: {ref!r:.80}")
        if key in used:
            raise ValueError(f"{source}: rule state {where} refers to part {key!r} a second time")
        used.add(key)
        return bytes(parts[key])

    out = walk(state, "state", 0)
    unused = sorted(k for k in parts if k.startswith(PART_PREFIX) and k not in used)
    if unused:
        raise ValueError(f"{source}: rule state parts {unused} are not referenced by the state")
    return name, out


__all__ = ["MAX_DEPTH", "PART_KEY", "PART_PREFIX", "pack_rule_state", "unpack_rule_state"]
