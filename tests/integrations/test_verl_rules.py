"""verl through the one front door: ``knapsack.rule`` names the run's rule, built and checked against what verl can
run when the config is read (the hooks' reading and the offline check), driven only through ``OneRound``, and
stored in ``knapsack/state.bin`` in the one rule-state format; and what a resume does when verl's latest checkpoint
has no knapsack state (verl writes its marker before the knapsack state)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from knapsack_rl.integrations.verl import KnapsackVerlConfig, VerlRun, newest_complete_checkpoint, yaml_dir
from knapsack_rl.integrations.verl.resume import LATEST_FILE, restore_or_create
from knapsack_rl.rules import ENGINES, OneRound, RuleSetup, StepSpec, engines_for, make_rule, rule_names

N, M = 4, 6
VALID = [  # what verl's own validate_config needs of the shipped YAML (see test_verl.py)
    "actor_rollout_ref.rollout.n=8",
    "data.train_batch_size=256",
    "actor_rollout_ref.actor.ppo_mini_batch_size=32",
    "actor_rollout_ref.actor.use_dynamic_bsz=true",
    "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true",
]
BASE = {"negative_n": 2, "positive_n": 2, "uniform_epochs": 0, "min_count": 2, "max_n": 12}
P_TRUE = np.array([1.0, 0.0, 0.5, 0.25, 0.75, 1.0, 0.0, 0.5, 0.125, 0.875, 0.5, 0.375])


def settings(rule: str = "knapsack", **section: object) -> KnapsackVerlConfig:
    """The run's settings as the knapsack section gives them (``rule`` left out when it is the default)."""
    named = {} if rule == "knapsack" else {"rule": rule}
    return KnapsackVerlConfig.from_section({**named, **BASE, **section}, n=N, train_batch_size=M)


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal metric dicts (NaN equals NaN: a key no rule of the kind fills)."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])) for k in a)


def verl_rules() -> list[str]:
    """The registered rules verl can run (as `knapsack-rl rules` lists them), with this test's settings."""
    setup = RuleSetup(N, M, 0, knapsack=settings().knapsack)
    return [name for name in rule_names() if "verl" in engines_for(make_rule(name, setup))]


def compose(overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(yaml_dir()), version_base=None):
        return hydra_compose(config_name="knapsack_grpo", overrides=overrides)


def drive(run: VerlRun, steps: int, seed: int = 0) -> list[np.ndarray]:
    """``steps`` verl steps of M of the 12 prompts (2 steps per pass), every prompt its planned rollouts."""
    rng, out = np.random.default_rng(seed), []
    for step in range(1, steps + 1):
        ids = rng.permutation(len(P_TRUE))[:M].tolist()
        uids = [f"s{step}-{i}" for i in ids]
        counts = run.plan(ids, uids, step=step)
        rewards = np.where(rng.random(int(counts.sum())) < np.repeat(P_TRUE[ids], counts), 1.0, -1.0)  # math_dapo
        run.observe([u for u, c in zip(uids, counts, strict=True) for _ in range(int(c))], rewards, step=step)
        out.append(counts)
    return out


# ---------------------------------------------------------------------------- the rule, chosen by name
def test_knapsack_rule_in_the_shipped_yaml_chooses_any_rule_verl_can_run_without_a_plus() -> None:
    cfg = compose(["actor_rollout_ref.rollout.n=4", "data.train_batch_size=6", "knapsack.rule=coba"])
    read = KnapsackVerlConfig.from_verl(cfg)
    assert read.rule == "coba" and read.knapsack.allocation.negative_n == 2  # the YAML's settings still apply
    assert VerlRun(read).planner is None and type(VerlRun(read).rule).__name__ == "CobaRule"
    default = KnapsackVerlConfig.from_verl(compose(["actor_rollout_ref.rollout.n=4"]))
    assert default.rule == "knapsack" and VerlRun(default).planner is not None
    assert {"knapsack", "knapsack:recipe", "uniform", "coba", "uncertainty"} <= set(verl_rules())


@pytest.mark.filterwarnings("ignore:Disabled critic:UserWarning")
@pytest.mark.parametrize("rule", ["uniform", "coba"])
def test_the_small_examples_documented_rule_override_composes_and_passes_verls_validation(rule: str) -> None:
    """`bash examples/verl/run_small_1gpu.sh knapsack.rule=uniform` (the README's baseline) reaches verl as a rule."""
    import os
    import subprocess
    import sys

    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    script = Path(__file__).resolve().parents[2] / "examples" / "verl" / "run_small_1gpu.sh"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/user", "DRY_RUN": "1", "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join(sys.path)}  # fmt: skip
    argv = subprocess.run(["bash", str(script), f"knapsack.rule={rule}"], env=env, capture_output=True, text=True,
                          check=True).stdout.splitlines()  # fmt: skip
    cfg = compose(argv[5:])
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    read = KnapsackVerlConfig.from_verl(cfg)
    assert read.rule == rule and VerlRun(read).rule.name == rule


@pytest.mark.parametrize(
    ("rule", "needs"),
    [
        ("knapsack:two-phase", "it generates in rounds within a step, and verl's agent loop takes one count"),
        ("dapo", "it draws prompts beyond the step's batch, and verl's dataloader fixes the prompts of a batch"),
        ("greso", "it can give a prompt of the batch 0 rollouts, and verl's agent loop runs at least one session"),
        ("knapsack:project", "it can give a prompt a single rollout, and verl's GRPO gives a lone rollout"),
    ],
)
def test_a_rule_verl_cannot_run_is_refused_when_the_config_is_read_by_the_hooks_and_the_check(
    rule: str, needs: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from knapsack_rl.integrations.verl.check import main

    can = ", ".join(engines_for(make_rule(rule, RuleSetup(N, M, 0, knapsack=settings().knapsack))))
    with pytest.raises(ValueError, match=re.escape(f"rule {rule!r} cannot run in verl: ")) as info:
        settings(rule)
    message = str(info.value)
    assert needs in message and f"engines that can run it: {can}" in message and "\n" not in message
    assert main(["--no-files", "actor_rollout_ref.rollout.n=4", f"knapsack.rule={rule}"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"  # the offline check reads the section as the hooks do
    assert main(["--no-files", *VALID, "knapsack.rule=uncertainty"]) == 0
    assert "ok: verl 0.9.1; rule uncertainty;" in capsys.readouterr().out


def test_the_fix_is_named_for_the_settings_of_a_knapsack_rule() -> None:
    with pytest.raises(ValueError, match=re.escape("rule 'knapsack:project' fixes its settings: use knapsack.rule=k")):
        settings("knapsack:project")
    with pytest.raises(ValueError, match=re.escape("min_n=1 give a single rollout (set them >= 2")):
        settings(min_n=1)
    with pytest.raises(ValueError, match=re.escape("knapsack.rule='nope' is not a registered rule; valid: ['coba'")):
        settings("nope")
    with pytest.raises(ValueError, match=re.escape("knapsack.preset='uniform' is not a preset")):
        settings(preset="uniform")
    assert ENGINES.get("verl").singles is not None  # the one source of the refusal


# ---------------------------------------------------------------------------- only through OneRound
@pytest.mark.parametrize("rule", ["knapsack", "uniform", "knapsack:recipe", "coba", "uncertainty"])
def test_every_rule_verl_runs_plans_through_one_round_exactly_as_the_rule_itself(rule: str, tmp_path: Path) -> None:
    """A twin OneRound(rule, 'verl') fed the same specs and successes plans the same counts; the state round-trips."""
    run = VerlRun(settings(rule))
    twin = OneRound(settings(rule).make_rule(), "verl")
    rng = np.random.default_rng(3)
    for step in range(1, 7):
        ids = rng.permutation(len(P_TRUE))[:M].tolist()
        uids = [f"s{step}-{i}" for i in ids]
        counts = run.plan(ids, uids, step=step)
        epoch = run.epoch
        spec = StepSpec(np.asarray(ids), epoch=epoch, step=step - 1, n=N, total_budget=N * M)
        np.testing.assert_array_equal(counts, twin.plan(spec))
        rewards = np.where(rng.random(int(counts.sum())) < np.repeat(P_TRUE[ids], counts), 1.0, -1.0)
        ours = run.observe([u for u, c in zip(uids, counts, strict=True) for _ in range(int(c))], rewards, step=step)
        theirs = twin.observe(spec, np.repeat(np.arange(M), counts), (rewards + 1) / 2)
        assert same(
            {k: v for k, v in ours.items() if k not in ("alloc/solve_s", "timing_s/plan", "train/epoch")},
            {k: v for k, v in theirs.items() if k != "alloc/solve_s"},
        )
    run.save(tmp_path)
    back = VerlRun.load(tmp_path, settings(rule))
    assert back.rule.state_dict() == run.rule.state_dict() and back.epoch == run.epoch
    ids = list(range(M))
    np.testing.assert_array_equal(back.plan(ids, [f"n{i}" for i in ids]), run.plan(ids, [f"n{i}" for i in ids]))


def test_the_planner_is_read_only_and_a_run_has_no_other_door_to_the_rule() -> None:
    run = VerlRun(settings())
    with pytest.raises(AttributeError):
        run.planner = None  # type: ignore[misc]
    with pytest.raises(AttributeError):
        run.rule = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        VerlRun(settings(), planner=run.planner)  # type: ignore[call-arg]  # no Planner of one's own


def test_a_prompt_that_comes_back_with_other_than_its_planned_rollouts_is_refused() -> None:
    """What happens when the counts do not reach verl's agent loop (it then runs rollout.n for every prompt)."""
    run = VerlRun(settings())
    drive(run, 2)  # one pass: now the knapsack moves rollouts
    ids = list(range(M))
    counts = run.plan(ids, [f"u{i}" for i in ids], step=3)
    assert len(set(counts.tolist())) > 1
    bad = [f"u{i}" for i in ids for _ in range(N)]  # verl's default n for every prompt
    with pytest.raises(ValueError, match=r"was planned \d+ rollouts but 4 came back: verl did not run the knapsack"):
        run.observe(bad, np.ones(len(bad)), step=3)
    assert run.pending == M  # nothing was observed


def test_rewards_are_mapped_once_with_the_runs_settings_whatever_the_format() -> None:
    """verl's rewards are mapped to successes by the adapter with reward_format / success_threshold; the rule's own
    tracker takes them as they are (mapping twice would refuse 'signed' and misread a threshold of 0)."""
    for section, rewards, rate in (
        ({"reward_format": "signed"}, [1.0, -1.0, -1.0, -1.0], 0.25),
        ({"success_threshold": 0.0}, [0.9, -1.3, 0.2, -0.1], 0.5),  # e.g. overlong-penalised +-1
        ({"success_threshold": 5.0}, [7.0, 2.0, 5.0, 4.0], 0.5),  # a reward on a 0..10 scale
    ):
        run = VerlRun(settings(**section))
        assert run.plan([3], ["u"], step=1).tolist() == [N]
        metrics = run.observe(["u"] * N, rewards, step=1)
        assert run.planner is not None and run.planner.tracker.estimate([3]).tolist() == [rate], section
        assert metrics["train/reward_mean"] == rate


def test_a_sample_that_holds_several_planned_batches_observes_each_with_its_own_spec() -> None:
    """verl with data.gen_batch_size < train_batch_size plans a step in chunks; its async modes may sample prompts
    planned on both sides of an epoch boundary: each batch is observed with its planned spec, epochs never back."""
    run = VerlRun(settings())
    a = run.plan([0, 1, 2], ["a0", "a1", "a2"], step=1)
    b = run.plan([3, 0], ["b3", "b0"], step=1)  # prompt 0 again: a new pass, epoch 1
    assert run.epoch == 1
    uids = ["a0", "a1", "a2", "b3", "b0"]
    metrics = run.observe([u for u, c in zip(uids, [*a, *b], strict=True) for _ in range(int(c))],
                          np.ones(int(a.sum() + b.sum())), step=1)  # fmt: skip
    assert metrics["train/rollouts"] == a.sum() + b.sum() and metrics["train/prompts"] == 5 and run.pending == 0
    assert metrics["train/epoch"] == 1.0 and run.planner is not None and run.planner.tracker.epoch == 1
    run.plan([4], ["late"], step=2)
    run.plan([5], ["later"], step=3)
    run.observe(["later"] * N, np.ones(N), step=3)
    run.observe(["late"] * N, np.ones(N), step=2)  # an older batch after a newer one: step and epoch never go back
    assert run.planner.tracker.step == 3


def test_a_reissued_uid_leaves_its_earlier_batch() -> None:
    run = VerlRun(settings())
    run.plan([0, 1], ["u0", "u1"], step=1)
    run.plan([1], ["u1"], step=2)  # verl re-issues an in-flight prompt after an async resume
    assert run.pending == 2 and run.epoch == 0
    run.observe(["u1"] * N, np.ones(N), step=2)
    run.observe(["u0"] * N, np.zeros(N), step=2)
    assert run.pending == 0


# ---------------------------------------------------------------------------- state.bin holds the rule's state
def test_another_rules_state_or_other_reward_settings_are_refused_naming_both(tmp_path: Path) -> None:
    run = VerlRun(settings("coba"))
    drive(run, 2)
    run.save(tmp_path)
    with pytest.raises(ValueError, match=r"holds the state of rule 'coba', not of this run's rule 'knapsack' \(knaps"):
        VerlRun.load(tmp_path, settings())
    with pytest.raises(ValueError, match=re.escape("other settings (success_threshold: null -> 0.5)")):
        VerlRun.load(tmp_path, settings("coba", success_threshold=0.5))
    assert VerlRun.load(tmp_path, settings("coba")).rule.state_dict() == run.rule.state_dict()


# ---------------------------------------------------------------------------- verl's marker before the knapsack save
def _checkpoint(root: Path, step: int, *, knapsack: VerlRun | None) -> Path:
    folder = root / f"global_step_{step}"
    (folder / "actor").mkdir(parents=True)
    (folder / "data.pt").write_bytes(b"")
    if knapsack is not None:
        knapsack.save(folder)
    (root / LATEST_FILE).write_text(str(step))  # verl writes its marker, then calls on_save
    return folder


def _config(root: Path, **section: object) -> Any:
    return OmegaConf.create({
        "data": {"train_batch_size": M}, "actor_rollout_ref": {"rollout": {"n": N}},
        "trainer": {"resume_mode": "auto", "default_local_dir": str(root), "resume_from_path": None,
                    "project_name": "p", "experiment_name": "e", "v1": {"trainer_mode": "sync", "sampler": {}}},
        "algorithm": {"adv_estimator": "grpo"}, "knapsack": {**BASE, **section},
    })  # fmt: skip


def test_a_resume_from_verls_latest_checkpoint_without_knapsack_state_names_the_newest_complete_one(
    tmp_path: Path,
) -> None:
    run = VerlRun(settings())
    drive(run, 2)
    _checkpoint(tmp_path, 1, knapsack=run)
    drive(run, 2, seed=1)
    complete = _checkpoint(tmp_path, 2, knapsack=run)
    killed = _checkpoint(tmp_path, 3, knapsack=None)  # killed between verl's marker and on_save
    (tmp_path / "global_step_9").mkdir()  # not a checkpoint (no actor/): never named
    assert newest_complete_checkpoint(tmp_path) == complete
    with pytest.raises(FileNotFoundError) as info:
        restore_or_create(_config(tmp_path))
    message = str(info.value)
    assert message.startswith(f"no knapsack state in {killed} (expected {killed}/knapsack/state.bin)")
    assert f"resume from it with trainer.resume_mode=resume_path trainer.resume_from_path={complete}" in message
    assert "knapsack.resume_without_state=true" in message and "\n" not in message
    fresh = restore_or_create(_config(tmp_path, resume_without_state=True))  # the explicit opt-out
    assert fresh.planner is not None and len(fresh.planner.tracker) == 0
    cfg = _config(tmp_path)
    cfg.trainer.resume_mode, cfg.trainer.resume_from_path = "resume_path", str(complete)  # what the message says
    resumed = restore_or_create(cfg)
    assert resumed.rule.state_dict() == run.rule.state_dict() and resumed.epoch == run.epoch
    for step in (1, 2):
        (tmp_path / f"global_step_{step}" / "knapsack" / "state.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"No earlier checkpoint has knapsack state; set knapsack\.resume_with"):
        restore_or_create(_config(tmp_path))
