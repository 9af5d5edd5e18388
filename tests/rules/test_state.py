"""One format for a rule's state in any engine's state file: every rule's state packs to JSON + parts,
round-trips exactly through the state-file envelope, and a forged or malformed rule state is refused in one
line naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from knapsack_rl.io import read_state_file, write_state_file
from knapsack_rl.rules import RuleSetup, StepLog, StepSpec, make_rule, rule_names, run_step
from knapsack_rl.rules.state import pack_rule_state, unpack_rule_state
from knapsack_rl.sim import SimConfig, StepEnv, World

CONFIG = SimConfig(num_prompts=96, num_heldout=8, num_topics=4, prompts_per_step=12, steps=12)


def _stepped(name: str) -> Any:
    """Rule ``name`` after 12 simulated steps (a tracker, skip lists, evictions: some state to keep)."""
    rule = make_rule(name, RuleSetup(CONFIG.n, CONFIG.prompts_per_step, 5))
    world = World(CONFIG, 5)
    env = StepEnv(CONFIG, world, 5)
    for _ in range(CONFIG.steps):
        log, selection = run_step(rule, env.begin_step(), env)
        world.update(env.end_step(log, selection))
    return rule


@pytest.mark.parametrize("name", rule_names())
def test_every_rules_state_round_trips_through_a_state_file(name: str, tmp_path: Path) -> None:
    rule = _stepped(name)
    meta, parts = pack_rule_state(name, rule.state_dict())
    assert all(key.startswith("rule/") for key in parts)
    path = tmp_path / "state.bin"
    write_state_file(path, "rule-state", 1, {"rule": meta}, parts)
    file = read_state_file(path, what="rule state", kind="rule-state", version=1, parts=sorted(parts))
    got_name, state = unpack_rule_state(file.meta["rule"], file.parts, source=str(path))
    assert (got_name, state) == (name, rule.state_dict())
    fresh = make_rule(name, RuleSetup(CONFIG.n, CONFIG.prompts_per_step, 5))
    fresh.load_state_dict(state, source=str(path))
    assert fresh.state_dict() == rule.state_dict()
    spec = StepSpec(np.arange(12), epoch=3, step=40, n=CONFIG.n, total_budget=CONFIG.budget)
    if not fresh.needs().rounds and not fresh.needs().draws:  # the same state plans the same counts
        fresh.begin(spec)
        rule.begin(spec)
        first, second = fresh.next_round(StepLog(spec)), rule.next_round(StepLog(spec))
        assert first is not None and second is not None
        np.testing.assert_array_equal(first.counts, second.counts)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"x": float("nan")}, r"state.x is nan; a state holds finite floats only"),
        ({"x": (1, 2)}, r"state.x is a tuple, not plain data"),
        ({"x": np.zeros(2)}, r"state.x is a ndarray, not plain data"),
        ({"x": {1: 2}}, r"state.x has a key that is not a plain str: 1"),
        ({"x": {"$part": "rule/0"}}, r"state.x has a key that is not a plain str: '\$part'"),
    ],
)
def test_pack_refuses_what_is_not_plain_data(state: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r"^rule state of 'r': " + message):
        pack_rule_state("r", state)


@pytest.mark.parametrize(
    ("meta", "parts", "message"),
    [
        ({"name": "r"}, {}, r"must hold exactly 'name' and 'state'; got \['name'\]"),
        ({"name": 3, "state": {}}, {}, r"needs a str 'name' and a mapping 'state'; got name=3"),
        ({"name": "r", "state": {"t": {"$part": "rule/1"}}}, {"rule/0": b"x"}, r"state.t refers to a part that is not"),
        ({"name": "r", "state": {"t": {"$part": "tensors"}}}, {"tensors": b"x"}, r"refers to a part that is not"),
        ({"name": "r", "state": {"t": {"$part": "rule/0", "y": 1}}}, {"rule/0": b"x"}, r"refers to a part that is"),
        ({"name": "r", "state": {"a": {"$part": "rule/0"}, "b": {"$part": "rule/0"}}}, {"rule/0": b"x"},
         r"state.b refers to part 'rule/0' a second time"),
        ({"name": "r", "state": {}}, {"rule/0": b"x"}, r"rule state parts \['rule/0'\] are not referenced"),
    ],
)  # fmt: skip
def test_unpack_refuses_a_malformed_rule_state_in_one_line(meta: Any, parts: dict[str, bytes], message: str) -> None:
    with pytest.raises(ValueError, match=r"^f.bin: .*" + message):
        unpack_rule_state(meta, parts, source="f.bin")


def test_unpack_keeps_other_parts_out_of_the_rule_state() -> None:
    meta, parts = pack_rule_state("r", {"tracker": b"abc", "ids": [1, "a"]})
    name, state = unpack_rule_state(meta, {**parts, "tensors": b"t"}, source="f")
    assert (name, state) == ("r", {"tracker": b"abc", "ids": [1, "a"]})
