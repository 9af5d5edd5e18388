"""Planner: the one object every engine talks to (plan, observe, two-phase, state, epochs)."""

from __future__ import annotations

import numpy as np
import pytest

from knapsack_rl import KnapsackConfig, Planner, Tracker, allocate
from knapsack_rl.core.allocate import uniform_allocation
from knapsack_rl.core.planner import EpochCounter

P_TRUE = np.linspace(0.0, 1.0, 12)
IDS = [f"q{i}" for i in range(12)]


def _rollouts(budgets: np.ndarray, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    rows = np.repeat(np.arange(len(IDS)), budgets)
    return [IDS[i] for i in rows], (rng.random(rows.size) < P_TRUE[rows]).astype(float)


def _run(planner: Planner, epochs: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    plans = []
    for epoch in range(epochs):
        alloc = planner.plan(IDS, epoch=epoch)
        planner.observe(*_rollouts(alloc.budgets, rng), epoch=epoch)
        plans.append(alloc.budgets)
    return plans


def test_plans_equal_allocate_on_the_tracker_estimates_after_the_cold_start() -> None:
    cfg = KnapsackConfig.preset("project", min_count=4, posterior=False)  # point estimates: allocate(p_hat)
    planner = Planner(cfg)
    plans = _run(planner, 1)
    assert plans[0].tolist() == [8] * 12  # epoch 0: cold start, every prompt n
    p_hat = planner.tracker.estimate(IDS)
    expected = allocate(p_hat, cfg.allocation)
    got = planner.plan(IDS, epoch=1)
    assert got.budgets.tolist() == expected.budgets.tolist() and got.budgets.sum() == 96
    assert planner.last is not None and np.array_equal(planner.last.p_hat, p_hat, equal_nan=True)


def test_uniform_rule_logs_the_same_keys_as_knapsack() -> None:
    rng = np.random.default_rng(1)
    keys = []
    for allocates in (False, True):
        config = KnapsackConfig.preset("project", min_count=4) if allocates else KnapsackConfig(allocate=False)
        planner = Planner(config.replace(min_count=4))
        _run(planner, 2)
        alloc = planner.plan(IDS, epoch=2)
        if not allocates:
            assert alloc.budgets.tolist() == [8] * 12
            ref = uniform_allocation(planner.tracker.estimate(IDS), planner.config.allocation)
            assert alloc.objective == pytest.approx(ref.objective)
        metrics = planner.observe(*_rollouts(alloc.budgets, rng), epoch=2)
        assert metrics["alloc/budget_total"] == 96.0 and "train/effective_prompts" in metrics
        keys.append(set(metrics))
    assert keys[0] == keys[1]


def test_observe_counts_prompts_with_signal() -> None:
    planner = Planner()
    planner.plan(["a", "b", "c"], epoch=0)
    ids = ["a"] * 3 + ["b"] * 3 + ["c"] * 2
    m = planner.observe(ids, [1, 0, 1, 1, 1, 1, 0, 0], epoch=0)
    assert m["train/effective_prompts"] == 1.0 and m["train/effective_grad_ratio"] == pytest.approx(3 / 8)


def test_two_phase_probe_then_the_rest_keeps_the_total() -> None:
    cfg = KnapsackConfig.preset("project", probe_n=4, uniform_epochs=0, min_count=4, posterior=False)
    planner = Planner(cfg)
    probe = planner.plan_probe(IDS, epoch=0)
    assert probe.tolist() == [4] * 12  # nobody has an estimate yet
    rng = np.random.default_rng(2)
    probe_ids, probe_rewards = _rollouts(probe, rng)
    alloc = planner.plan(IDS, epoch=0, probe=(probe_ids, probe_rewards))
    assert alloc.budgets.sum() == 96 and np.all(alloc.budgets >= probe)
    assert planner.last is not None and planner.last.probe_rollouts == 48
    solved = [i for i in range(12) if P_TRUE[i] == 1.0]
    assert alloc.budgets[solved].tolist() == [4]  # 4 of 4 right: p = 1, nothing more than the probe
    rest_ids, rest_rewards = _rollouts(alloc.budgets - probe, rng)
    m = planner.observe(probe_ids + rest_ids, np.r_[probe_rewards, rest_rewards], epoch=0)
    assert m["alloc/probe_rollouts"] == 48.0 and planner.tracker.counts(IDS).sum() == 96
    assert planner.plan_probe(IDS, epoch=1).tolist() == [0] * 12  # everyone has an estimate now


def test_probe_of_an_estimated_prompt_is_refused() -> None:
    planner = Planner(KnapsackConfig.preset("project", probe_n=2, uniform_epochs=0, min_count=1))
    planner.plan(["a", "b"], epoch=0)
    planner.observe(["a", "a"], [1, 0], epoch=0)
    with pytest.raises(ValueError, match=r"probe holds rollouts of prompt 'a', which has an estimate"):
        planner.plan(["a", "b"], epoch=1, probe=(["a", "b"], [1, 0]))


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([1.0, 2], r"prompt_ids\[0\]=1.0 is not a valid prompt id: prompt ids must be int or str, not float"),
        ([True, 2], r"prompt_ids\[0\]=True is not a valid prompt id: .* not bool"),
        (["a", "a"], r"prompt_ids must be unique; prompt_ids\[1\]='a' appears more than once"),
    ],
)
def test_bad_ids_are_refused(ids: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Planner().plan(ids, epoch=0)  # type: ignore[arg-type]


def test_state_round_trip_and_foreign_tracker_refused() -> None:
    cfg = KnapsackConfig.preset("project", min_count=4)
    planner = Planner(cfg)
    _run(planner, 2)
    state = planner.state_dict()
    restored = Planner(cfg)
    restored.load_state_dict(state, source="ckpt")
    assert restored.plan(IDS, epoch=2).budgets.tolist() == planner.plan(IDS, epoch=2).budgets.tolist()
    other = Planner(cfg.replace(estimator="beta"))
    with pytest.raises(ValueError, match=r"ckpt: the tracker was saved with other settings \(estimator: "):
        other.load_state_dict(state, source="ckpt")
    with pytest.raises(ValueError, match=r"was built with"):
        Planner(cfg, tracker=Tracker(cfg.replace(min_count=2).tracker))


def test_epoch_counter_starts_an_epoch_at_the_first_repeated_id() -> None:
    counter = EpochCounter()
    assert [counter.advance(b) for b in (["a", "b"], ["c"], ["a"], ["b", "c"], ["b"])] == [0, 0, 1, 1, 2]
    clone = EpochCounter()
    clone.load_state_dict(counter.state_dict())
    assert clone.advance(["c"]) == counter.advance(["c"]) == 2


def test_posterior_planning_uses_the_trackers_beta_evidence() -> None:
    cfg = KnapsackConfig.preset("project", posterior=True, min_count=4)
    planner = Planner(cfg)
    _run(planner, 1)
    a, b = planner.tracker.posterior(IDS)
    got = planner.plan(IDS, epoch=1)
    p_hat = np.where(np.isnan(planner.tracker.estimate(IDS)), np.nan, a / (a + b))
    expected = allocate(p_hat, cfg.allocation, posterior=(a, b))
    assert got.budgets.tolist() == expected.budgets.tolist() and got.budgets.sum() == 96
    assert got.budgets[0] >= cfg.allocation.min_n  # never solved in 8: still hard, not hopeless
    with pytest.raises(ValueError, match=r"value='variance2' is not a registered value"):
        cfg.replace(value="variance2")


def test_a_plan_for_a_new_epoch_reads_that_epochs_rewards() -> None:
    """The recipe estimator prefers the planned epoch's rewards (none yet at its first step), not the last one's."""
    planner = Planner(KnapsackConfig.preset("recipe", min_count=4))
    planner.plan(["a"], epoch=1)
    planner.observe(["a"] * 20, [0.0] * 4 + [1.0] * 16, epoch=1)  # 20 rewards in epoch 1: mean 0.8
    assert planner.tracker.estimate(["a"])[0] == pytest.approx(0.8)  # as of epoch 1: its own mean
    planner.plan(["a"], epoch=2)  # epoch 2 has no reward yet: the 16 most recent, all successes
    assert planner.last is not None and planner.last.p_hat[0] == 1.0


# ------------------------------------------------------------------ refused calls and loads change nothing
def _snapshot(planner: Planner) -> tuple[dict[str, object], object]:
    return planner.state_dict(), planner.last  # the tracker's bytes and the last fit, if any


def test_observe_refuses_an_epoch_or_step_going_backwards_and_changes_nothing() -> None:
    planner = Planner(KnapsackConfig.preset("project", min_count=1))
    planner.plan(["a", "b"], epoch=2)
    planner.observe(["a", "b"], [1, 0], epoch=2, step=5)
    before = _snapshot(planner)
    with pytest.raises(ValueError, match=r"^epoch must not go backwards: got epoch=1 after epoch 2$"):
        planner.observe(["a", "b"], [1, 0], epoch=1, step=6)
    with pytest.raises(ValueError, match=r"^step must not go backwards: got step=4 after step 5$"):
        planner.observe(["a", "b"], [1, 0], epoch=2, step=4)
    assert _snapshot(planner) == before
    planner.observe(["a"], [1], epoch=2, step=5)  # the same epoch and step again: allowed
    planner.observe(["a"], [1], epoch=3)  # the next step by default
    assert (planner.tracker.epoch, planner.tracker.step) == (3, 6)


@pytest.mark.parametrize("bad", [77.0, True, np.float64(77.0)])
def test_a_probe_id_must_be_an_int_or_str_like_every_id(bad: object) -> None:
    planner = Planner(KnapsackConfig.preset("project", probe_n=2, uniform_epochs=0, min_count=1, posterior=False))
    before = _snapshot(planner)
    with pytest.raises(ValueError, match=r"^probe rollout_prompt_ids\[1\]=.* is not a valid prompt id: prompt ids"):
        planner.plan([77, 78], epoch=0, probe=([77, bad, 78, 78], [1, 1, 0, 0]))
    assert _snapshot(planner) == before
    with pytest.raises(ValueError, match=r"^probe must be a pair \(rollout_prompt_ids, rewards\)"):
        planner.plan([77, 78], epoch=0, probe=([77, 78],))  # type: ignore[arg-type]


def _state(**edit: object) -> dict[str, object]:
    planner = Planner(KnapsackConfig.preset("project", min_count=4))
    _run(planner, 1)
    return {**planner.state_dict(), **edit}


NESTED: object = []
for _ in range(100_000):
    NESTED = [NESTED]

BAD_STATES = [
    ("not a dict", r"a planner state holds exactly \['config', 'tracker', 'version'\] \(and 'prior' .*\); got str"),
    ({"version": 1, "tracker": b""}, r"holds exactly .*; got \['tracker', 'version'\]"),
    (_state(extra=1), r"holds exactly .*; got \['config', 'extra', 'tracker', 'version'\]"),
    ({1: 2, "a": 3}, r"holds exactly .*; got \['1', 'a'\]"),
    (_state(version=True), r"not a planner state of version 1; got version=True"),
    (_state(version=2), r"not a planner state of version 1; got version=2"),
    (_state(config="x"), r"the planner state's config is invalid: knapsack must be a mapping; got str"),
    (_state(config={"allocation": NESTED}), r"the planner state's config is invalid: allocation must be"),
    (_state(config={"allocate": "bogus"}), r"the planner state's config is invalid: allocate must be true or false"),
    (_state(config={"typo": 1}), r"the planner state's config is invalid: unknown setting\(s\) \['typo'\]"),
    (_state(tracker="bytes?"), r"tracker data must be bytes; got str"),
    (_state(tracker=b"KNAPSACK-RL-STATE"), r"tracker file is truncated"),
    (_state(tracker=b"KNAPSACK-RL-TRACKER\x00v2\n"), r"a tracker file of an earlier knapsack-rl"),
    (_state(prior="x"), r"the planner state's prior must be 808 bytes \(101 float64\); got str"),
    (_state(prior=b"\0" * 800), r"the planner state's prior must be 808 bytes \(101 float64\); got 800 bytes"),
    (
        _state(prior=np.r_[np.nan, np.full(100, 0.01)].tobytes()),
        r"prior must be weights >= 0 summing to 1; prior\[0\]=nan",
    ),
    (
        _state(prior=np.r_[-1.0, np.full(100, 0.02)].tobytes()),
        r"prior must be weights >= 0 summing to 1; prior\[0\]=-1.0",
    ),
    (
        _state(prior=np.full(101, 0.02).tobytes()),
        r"prior must be weights >= 0 summing to 1; the weights sum to 2.01999",
    ),
]


@pytest.mark.parametrize(("state", "message"), BAD_STATES, ids=[m[:40] for _, m in BAD_STATES])
def test_a_refused_state_is_one_line_and_changes_nothing(state: object, message: str) -> None:
    planner = Planner(KnapsackConfig.preset("project", min_count=4))
    _run(planner, 1, seed=3)
    planner.plan(IDS, epoch=1)
    before = _snapshot(planner)
    with pytest.raises(ValueError, match=rf"^ckpt: .*{message}") as info:
        planner.load_state_dict(state, source="ckpt")  # type: ignore[arg-type]
    assert "\n" not in str(info.value) and type(info.value) is ValueError
    assert _snapshot(planner) == before


def test_a_refused_epoch_counter_state_changes_nothing() -> None:
    counter = EpochCounter()
    counter.advance(["a", "b"])
    for state, message in (
        ({"epoch": 3, "seen": [1.5]}, r"seen\[0\]=1.5 is not a valid prompt id"),  # the epoch was set before
        ({"epoch": 3}, r"^<state>: an epoch counter state holds exactly \['epoch', 'seen'\]; got \['epoch'\]"),
        ({"epoch": -1, "seen": []}, r"^<state>: epoch counter epoch must be >= 0"),
        ([3, []], r"^<state>: an epoch counter state holds exactly .*; got list"),
    ):
        with pytest.raises(ValueError, match=message):
            counter.load_state_dict(state)  # type: ignore[arg-type]
        assert counter.state_dict() == {"epoch": 0, "seen": ["a", "b"]}


# ------------------------------------------------------------------ ids are checked once, where they enter
@pytest.mark.parametrize("form", ["int64 array", "list of int", "list of str"])
@pytest.mark.parametrize("preset", ["project", "signal", "two-phase"])
def test_a_step_checks_each_id_list_once_where_it_enters(
    monkeypatch: pytest.MonkeyPatch, form: str, preset: str
) -> None:
    """plan (and plan_probe) check the step's ids once, observe the rollouts' ids once; nothing inside the
    step checks them again (the tracker's private entries take checked ids)."""
    from knapsack_rl.core import planner as planner_module
    from knapsack_rl.core import tracker as tracker_module
    from knapsack_rl.core import validate

    seen: list[int] = []
    real = validate.check_prompt_ids

    def counting(name: str, ids: object) -> object:
        seen.append(len(ids))  # type: ignore[arg-type]
        return real(name, ids)

    for module in (validate, planner_module, tracker_module):
        monkeypatch.setattr(module, "check_prompt_ids", counting)
    convert = {"int64 array": np.array, "list of int": list, "list of str": lambda v: [f"p{i}" for i in v]}[form]
    planner = Planner(KnapsackConfig.preset(preset, min_count=1, uniform_epochs=0))
    rng = np.random.default_rng(0)
    for epoch in range(3):
        step = convert(list(range(10 * epoch, 10 * epoch + 12)))
        seen.clear()
        probe = planner.plan_probe(step, epoch=epoch)
        assert seen == [12]
        seen.clear()
        probe_ids = convert(np.repeat(np.arange(10 * epoch, 10 * epoch + 12), probe).tolist())
        probe_rewards = rng.integers(0, 2, len(probe_ids)).astype(float)
        alloc = planner.plan(step, epoch=epoch, probe=(probe_ids, probe_rewards) if probe.any() else None)
        assert seen == ([12, len(probe_ids)] if probe.any() else [12])
        seen.clear()
        rollouts = convert(np.repeat(np.arange(10 * epoch, 10 * epoch + 12), alloc.budgets).tolist())
        planner.observe(rollouts, rng.integers(0, 2, len(rollouts)), epoch=epoch)
        assert seen == [len(rollouts)]


def test_observe_keeps_int_and_str_ids_apart_in_the_metrics() -> None:
    planner = Planner(KnapsackConfig.preset("project", min_count=1))
    planner.plan([1, "1"], epoch=0)
    m = planner.observe([1, 1, "1", "1"], [1, 1, 0, 0], epoch=0)
    assert m["train/prompts"] == 2.0 and m["train/all_correct_ratio"] == 0.5 and m["train/effective_prompts"] == 0.0
    assert planner.tracker.counts([1, "1"]).tolist() == [2, 2]
