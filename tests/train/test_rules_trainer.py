"""Every registered rule in the reference trainer: the same invariants as in the simulator (limits, determinism),
one metric key set, equal compute (DAPO stops at the uniform arm's total), exact resume with the rule's state
and the stream's cursor, the knapsack rules' plans equal the Planner's, and `knapsack-rl compare` over peers."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from knapsack_rl import KnapsackConfig, Planner
from knapsack_rl.cli import main
from knapsack_rl.rollout.generate import Rollouts
from knapsack_rl.rules import rule_names
from knapsack_rl.rules.stream import PromptStream
from knapsack_rl.tasks import PromptSet, register_reward
from knapsack_rl.train.compare import arm_config, resolve_arm
from knapsack_rl.train.engine import PhaseTimer, TrainerEngine, candidate_rows
from knapsack_rl.train.trainer import Trainer
from tests.rules.invariants import Recorder, check_invariants
from tests.train.tiny_run import tiny_config

torch.set_num_threads(1)
SKIP = ("timing_s/", "perf/", "alloc/solve_s")  # wall-clock values differ between runs


@register_reward("test_rules_half", in_process=True)
def _half(responses, answers):
    """About half of the untrained tiny model's responses succeed: mixed groups."""
    return np.array([float(bool(r) and r[0] in "13579+=") for r in responses])


@register_reward("test_rules_rare", in_process=True)
def _rare(responses, answers):
    """Few responses succeed: most groups of 4 have no signal, so DAPO refills."""
    return np.array([float(bool(r) and r[0] == "1") for r in responses])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_config(tmp_path_factory.mktemp("rules"), reward="test_rules_half", max_steps=3)


def _rows(path, name="metrics.jsonl"):
    return [json.loads(line) for line in (path / name).read_text().splitlines()]


def _stable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(SKIP)} for r in rows]


def _recorded(cfg, rule):
    trainer = Trainer(cfg.replace(rule=rule))
    trainer.rule = Recorder(trainer.rule)  # records every round; the rule itself is unchanged
    trainer.train()
    return trainer, trainer.rule.steps


# ----------------------------------------------------------------------------- invariants in the trainer
def test_every_rule_keeps_its_limits_and_is_deterministic_in_the_trainer(base, tmp_path):
    budget = base.prompts_per_step * base.n  # B = 32
    keys = {}
    for name in rule_names():
        label = name
        trainer, steps = _recorded(base.replace(out_dir=str(tmp_path / label / "a")), name)
        check_invariants(steps, budget)  # the same checks as on the simulator (tests/rules)
        rows, allocs = _rows(tmp_path / label / "a"), _rows(tmp_path / label / "a", "allocations.jsonl")
        assert [r["train/rollouts_generated"] for r in rows] == [s.spent for s in steps]
        assert [r["train/rollouts"] for r in rows] == [int(s.train.sum()) for s in steps]
        assert [a["budget"] for a in allocs] == [s.counts.tolist() for s in steps]
        assert trainer.rollouts_total == sum(s.spent for s in steps) == rows[-1]["train/rollouts_total"]
        assert trainer.rollouts_total >= 3 * budget or len(steps) == 12  # the uniform arm's total, or the cap
        keys[label] = {k for r in rows for k in r if not k.startswith("timing_s/")}
        _recorded(base.replace(out_dir=str(tmp_path / label / "b")), name)  # same seed: same plans
        assert _stable(_rows(tmp_path / label / "b")) == _stable(rows)
        assert _rows(tmp_path / label / "b", "allocations.jsonl") == allocs
    assert all(k == keys["uniform"] for k in keys.values()), {n: k ^ keys["uniform"] for n, k in keys.items()}
    for key in ("train/rollouts_generated", "train/generation_rounds", "train/candidates", "alloc/budget_total"):
        assert key in keys["uniform"]


@pytest.mark.parametrize("rule", ["knapsack", "knapsack:two-phase"])
def test_knapsack_rules_in_the_trainer_plan_what_the_planner_plans(base, tmp_path, rule):
    """Issue 10: the trainer's plans equal Planner.plan on the same ids, epoch and probe rewards, step by step."""
    cfg = base.replace(out_dir=str(tmp_path / "k"), max_steps=None, epochs=3)  # epoch 0 cold start, then plans
    _, steps = _recorded(cfg, rule)
    mirror = Planner(cfg.knapsack if rule == "knapsack" else KnapsackConfig.preset("two-phase", n=cfg.n))
    for t, rec in enumerate(steps):
        ids = rec.ids
        probe = mirror.plan_probe(ids, epoch=rec.epoch)
        if probe.any():
            np.testing.assert_array_equal(rec.rounds[0][0], probe)
            first = np.arange(rec.spent) < int(probe.sum())  # the probe's rollouts come first
            alloc = mirror.plan(ids, epoch=rec.epoch, probe=(ids[rec.candidate[first]], rec.rewards[first]))
        else:
            alloc = mirror.plan(ids, epoch=rec.epoch)
        np.testing.assert_array_equal(rec.counts, alloc.budgets)
        mirror.observe(ids[rec.candidate], rec.rewards, epoch=rec.epoch, step=t + 1)
    assert [s.epoch for s in steps] == [0, 0, 1, 1, 2, 2]
    assert max(int(s.counts.max()) for s in steps) > cfg.n  # allocation happened, not only uniform counts
    assert (rule == "knapsack") == all(len(s.rounds) == 1 for s in steps)  # two-phase probes unestimated prompts


def test_dapo_ends_at_the_uniform_arms_total_rollouts(base, tmp_path):
    rare = dataclasses.replace(base.task, reward="test_rules_rare")
    cfg = base.replace(out_dir=str(tmp_path / "d"), task=rare, eval_every=2)
    trainer = Trainer(cfg.replace(rule="dapo"))
    trainer.train()
    rows = _rows(tmp_path / "d")
    spent = [r["train/rollouts_generated"] for r in rows if "train/rollouts_generated" in r]
    assert trainer.rollouts_total == sum(spent) == trainer.rollout_budget == 3 * 32  # exactly uniform's 3 steps
    assert all(s % 32 == 0 for s in spent) and max(spent) > 32 and len(spent) < 3  # refills: fewer steps
    assert all(r["train/rollouts"] <= 32 for r in rows if "train/rollouts" in r)  # at most M groups of n
    assert "eval/mean@2" in rows[-1] and rows[-1]["step"] == len(spent)  # the last step evaluates


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize(
    ("rule", "reward", "steps"),
    [("pilot-commit", "test_rules_half", 4), ("greso", "test_rules_rare", 4), ("dapo", "test_rules_rare", 12),
     ("uncertainty", "test_rules_half", 4)],
)  # fmt: skip
def test_a_resumed_rule_run_logs_exactly_the_uninterrupted_runs_metrics(base, tmp_path, rule, reward, steps):
    # rewards under which each rule's state matters: evictions, skipped prompts, refills, estimates
    task = dataclasses.replace(base.task, reward=reward)
    cfg = base.replace(max_steps=steps, epochs=steps, eval_every=2, task=task, rule=rule)
    Trainer(cfg.replace(out_dir=str(tmp_path / "full"))).train()
    first = Trainer(cfg.replace(out_dir=str(tmp_path / "cut")))
    first.train(stop_after=2)
    first.save_checkpoint()
    resumed = Trainer(cfg.replace(out_dir=str(tmp_path / "cut")))
    assert resumed.global_step == 2 and resumed.stream.state_dict() == first.stream.state_dict()
    resumed.train()
    assert resumed.global_step > 2 and resumed.rollouts_total >= resumed.rollout_budget
    assert _stable(_rows(tmp_path / "cut")) == _stable(_rows(tmp_path / "full"))
    assert _rows(tmp_path / "cut", "allocations.jsonl") == _rows(tmp_path / "full", "allocations.jsonl")
    with pytest.raises(ValueError, match=rf"other settings \(rule: \"{rule}\" -> \"reinforce-ada\""):
        Trainer(cfg.replace(out_dir=str(tmp_path / "cut"), rule="reinforce-ada"))


def test_the_stream_reads_each_epochs_order_in_batches_then_draws_across_epochs():
    stream = PromptStream(10, seed=3)
    order = [np.random.default_rng([3, e]).permutation(10) for e in range(3)]
    index, epoch = stream.batch(4)
    np.testing.assert_array_equal(index, order[0][:4])
    assert epoch == 0 and stream.peek(4)[1] == 0
    stream.batch(4)
    index, epoch = stream.peek(4)  # 2 prompts left in epoch 0: a batch never straddles (drop_last)
    np.testing.assert_array_equal(index, order[1][:4])
    assert epoch == 1 and stream.state_dict() == {"epoch": 0, "position": 8}
    drawn, epochs = stream.draw(5)  # a rule's extra draws take the last 2 of epoch 0, then epoch 1
    np.testing.assert_array_equal(drawn, np.r_[order[0][8:], order[1][:3]])
    np.testing.assert_array_equal(epochs, [0, 0, 1, 1, 1])
    twin = PromptStream(10, seed=3)
    twin.load_state_dict(stream.state_dict(), source="ckpt")
    np.testing.assert_array_equal(twin.batch(4)[0], stream.batch(4)[0])
    with pytest.raises(ValueError, match=r"ckpt: position must be <= 10; got position=11"):
        twin.load_state_dict({"epoch": 0, "position": 11}, source="ckpt")
    with pytest.raises(ValueError, match=r"ckpt: not a prompt stream state"):
        twin.load_state_dict({"epoch": 0}, source="ckpt")
    assert twin.state_dict() == stream.state_dict()  # a refused state changes nothing


def test_candidate_rows_hand_solved():
    # candidates 0 and 2 are one prompt: the generation lists its 2 + 3 rollouts first, then candidate 1's
    np.testing.assert_array_equal(candidate_rows(np.array([0, 1, 0]), np.array([2, 1, 3])), [0, 1, 5, 2, 3, 4])
    np.testing.assert_array_equal(candidate_rows(np.array([0, 1]), np.array([2, 0])), [0, 1])


def test_the_engine_orders_rollouts_by_candidate_when_a_prompt_is_drawn_twice():
    prompts = PromptSet(ids=np.array([10, 11, 12]), prompts=["a", "b", "c"], answers=["", "", ""], levels=["x"] * 3)
    calls = []

    def fake_generate(batch, counts):
        calls.append((batch.prompts.prompts, counts.tolist()))
        texts = [f"{p}{j}" for p, c in zip(batch.prompts.prompts, counts.tolist(), strict=True) for j in range(c)]
        index = torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts))
        ids = torch.zeros(len(texts), 2, dtype=torch.long)
        return Rollouts(index, ids, torch.ones_like(ids), torch.ones(len(texts), 1, dtype=torch.long), 1, texts)

    def fake_score(batch, rollouts):  # reward = position of the rollout in its generation call / 10
        return np.arange(len(rollouts)) / 10

    stream = PromptStream(3, seed=0)
    engine = TrainerEngine(prompts, stream, fake_generate, fake_score)
    spec = engine.begin_step(2, step=0, n=2, timer=PhaseTimer())
    ids, _ = engine.draw(3)  # the last prompt of epoch 0, then 2 of epoch 1: one repeats a batch prompt
    candidates = np.r_[spec.prompt_ids, ids]
    assert len(set(candidates.tolist())) == 3 and candidates.size == 5  # 5 candidates, 3 distinct prompts

    counts = np.array([1, 2, 0, 1, 3])

    class Log:  # what the engine reads of a StepLog
        size, spent = 5, 7
        rollout_candidate = np.repeat(np.arange(5), counts)

    rewards = engine.generate(Log(), counts)
    assert sorted(calls[0][0]) == ["a", "b", "c"] and sum(calls[0][1]) == 7  # one call over distinct prompts
    distinct = list(dict.fromkeys(candidates.tolist()))  # the call's prompts, in first-seen order
    slot = np.array([distinct.index(c) for c in candidates.tolist()])
    np.testing.assert_array_equal(rewards, candidate_rows(slot, counts) / 10)
    rollouts = engine.end_step(Log(), pad_id=0)
    np.testing.assert_array_equal(rollouts.prompt_index.numpy(), Log.rollout_candidate)  # candidate index
    letter = {10: "a", 11: "b", 12: "c"}  # candidate by candidate, each with its own prompt's responses
    assert [t[0] for t in rollouts.texts] == [letter[int(candidates[k])] for k in Log.rollout_candidate]


# ----------------------------------------------------------------------------- compare
def test_arms_resolve_to_the_planner_or_a_registered_rule(base):
    assert resolve_arm(base, "uniform").knapsack == base.knapsack and resolve_arm(base, "uniform").rule == "uniform"
    assert resolve_arm(base, "knapsack").knapsack == base.knapsack
    recipe = resolve_arm(base, "knapsack:recipe")
    assert recipe.rule == "knapsack" and recipe.knapsack == KnapsackConfig.preset("recipe", n=base.n)
    assert recipe.knapsack.allocation.n == base.n == 4  # a preset takes the run's n
    two = resolve_arm(base, "knapsack:two-phase+probe_n=2")
    assert two.rule == "knapsack" and two.knapsack.probe_n == 2 and two.folder == "knapsack-two-phase+probe_n=2"
    assert resolve_arm(base, "dapo").rule == "dapo"
    with pytest.raises(ValueError, match=r"arm 'grpo': 'grpo' is not a rule; valid: \['coba', "):
        resolve_arm(base, "grpo")
    with pytest.raises(ValueError, match=r"arm 'recipe': 'recipe' is not a rule \(the preset 'recipe' is the arm "):
        resolve_arm(base, "recipe")
    with pytest.raises(ValueError, match=r"arm 'coba\+n_low=3': \+key=value changes apply to knapsack settings"):
        resolve_arm(base, "coba+n_low=3")
    with pytest.raises(ValueError, match=r"arm 'dapo': rule 'dapo' does not plan with knapsack settings"):
        arm_config(base, "dapo")
    assert not arm_config(base, "uniform").allocate and arm_config(base, "knapsack:recipe").allocate


def test_compare_runs_the_peer_arms_at_equal_compute(base, tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    values = base.replace(max_steps=2, eval_every=2).to_dict()
    cfg.write_text(json.dumps(values))
    arms = "uniform,knapsack,reinforce-ada,pilot-commit,dapo,greso"
    argv = ["compare", "--config", str(cfg), "--out-dir", str(tmp_path / "c"), "--seeds", "0", "--arms", arms]
    assert main([*argv, "--jobs", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    paired = text[text.index("paired: arm - uniform") :].splitlines()[0]
    assert paired.split()[4:] == arms.split(",")[1:]  # one paired column per arm
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())["summaries"]
    spent = {arm: s[0]["rollouts"] for arm, s in summary.items()}
    exact = ("uniform", "knapsack", "greso", "dapo")  # B every step, or DAPO capped at the rollouts left
    assert {arm: spent[arm] for arm in exact} == dict.fromkeys(exact, 64.0)  # 2 steps x B = 32
    for arm in ("reinforce-ada", "pilot-commit"):  # at most B a step: the run ends within one step of the total
        assert 64 <= spent[arm] < 64 + 32
