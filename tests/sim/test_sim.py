"""Tests of the offline simulator: common random numbers, spend accounting, the update rule, runs, CLI."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from knapsack_rl.cli import main
from knapsack_rl.report.stats import first_crossing, mean_ci
from knapsack_rl.rules.keyed import id_keys
from knapsack_rl.sim import (
    Limits,
    Round,
    Rule,
    RuleSetup,
    Selection,
    SimConfig,
    StepEnv,
    StepLog,
    StepSpec,
    World,
    keyed_uniform,
    make_rule,
    register_init,
    register_rule,
    rule_names,
    run_step,
    simulate,
    summarize,
)
from knapsack_rl.sim.regimes import REGIMES, run_regimes
from knapsack_rl.sim.run import RunTrace
from knapsack_rl.sim.summary import compare
from knapsack_rl.sim.world import Rollouts

SMALL = SimConfig(num_prompts=640, num_heldout=100, num_topics=8, prompts_per_step=32, steps=60, snapshot_every=10)
FROZEN_HALF = replace(SMALL, init="half", lr_shared=0.0, lr_topic=0.0, lr_prompt=0.0)
FIXED_TOTAL = [r for r in rule_names() if r not in ("dapo", "reinforce-ada", "reinforce-ada-pos")]


def _env(config: SimConfig = SMALL, seed: int = 0) -> StepEnv:
    return StepEnv(config, World(config, seed), seed)


def _setup(config: SimConfig = SMALL, seed: int = 0) -> RuleSetup:
    return RuleSetup(config.n, config.prompts_per_step, seed)


def test_keyed_uniform_depends_only_on_its_key() -> None:
    a = keyed_uniform(3, 1, np.array([5, 6, 5]), np.array([0, 0, 0]), np.array([0, 0, 0]))
    assert a[0] == a[2] and a[0] != a[1]
    assert keyed_uniform(3, 1, 5, 0, 0) == a[0]
    assert keyed_uniform(4, 1, 5, 0, 0) != a[0]  # seed
    assert keyed_uniform(3, 2, 5, 0, 0) != a[0]  # stream
    u = keyed_uniform(0, 1, np.arange(20_000), 0, np.arange(20_000) % 7)
    assert np.all((u >= 0) & (u < 1))
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003


def test_id_keys_pass_ints_and_hash_strings_stably() -> None:
    np.testing.assert_array_equal(id_keys(np.array([3, 7])), [3, 7])
    keys = id_keys(np.array(["a", "b", "a"], dtype=object))
    assert keys[0] == keys[2] != keys[1]
    assert keys[0] == int.from_bytes(__import__("hashlib").blake2b(b"a", digest_size=8).digest(), "little", signed=True)
    with pytest.raises(ValueError, match=r"prompt_ids\[1\]=1.5 \(float\)"):
        id_keys(np.array(["a", 1.5], dtype=object))


def test_more_rollouts_keep_the_first_rewards_and_offsets_continue_the_stream() -> None:
    env = _env()
    prompts, epochs = env.draw(10)
    few, _ = env.sample(prompts, epochs, np.full(10, 4))
    more, _ = env.sample(prompts, epochs, np.full(10, 12))
    tail, _ = env.sample(prompts, epochs, np.full(10, 8), offset=4)
    np.testing.assert_array_equal(few.reshape(10, 4), more.reshape(10, 12)[:, :4])
    np.testing.assert_array_equal(tail.reshape(10, 8), more.reshape(10, 12)[:, 4:])
    assert env.spent == 10 * (4 + 12 + 8)


def test_a_round_continues_a_prompts_rollout_indices() -> None:
    # two rounds of 4 see exactly the rewards of one round of 8 (the engine offsets by log.counts)
    env = _env()
    spec = env.begin_step()
    log = StepLog(spec)
    four = np.full(spec.size, 4, dtype=np.int64)
    log.add_rollouts(four, env.generate(log, four))
    log.add_rollouts(four, env.generate(log, four))
    once, _ = env.sample(spec.prompt_ids, spec.prompt_epochs, np.full(spec.size, 8))
    np.testing.assert_array_equal(np.sort(log.rollout_candidate, kind="stable"), np.repeat(np.arange(spec.size), 8))
    order = np.argsort(log.rollout_candidate, kind="stable")
    np.testing.assert_array_equal(log.rewards[order], once)


def test_epoch_order_is_shared_and_covers_every_prompt_once() -> None:
    a, b = _env(seed=7), _env(seed=7)
    first = np.concatenate([a.draw(32)[0] for _ in range(SMALL.num_prompts // 32 + 1)])
    np.testing.assert_array_equal(first, b.draw(SMALL.num_prompts // 32 * 32 + 32)[0])
    assert sorted(first[: SMALL.num_prompts].tolist()) == list(range(SMALL.num_prompts))


def test_a_batch_never_straddles_two_epochs() -> None:
    cfg = replace(SMALL, num_prompts=100)  # 100 = 3 x 32 + 4: the last 4 of each epoch are skipped
    env = _env(cfg)
    epochs = []
    for _ in range(7):
        spec = env.begin_step()
        assert len(set(spec.prompt_ids.tolist())) == spec.size and set(spec.prompt_epochs.tolist()) == {spec.epoch}
        epochs.append(spec.epoch)
        env.step += 1
    assert epochs == [0, 0, 0, 1, 1, 1, 2]


def test_uniform_and_knapsack_see_the_same_rewards_in_epoch_one() -> None:
    # epoch 0: no estimates, so every knapsack preset gives N to every prompt, exactly like uniform
    rewards = {}
    for name in ("uniform", "knapsack:recipe", "knapsack:project"):
        env = _env()
        log, _ = run_step(make_rule(name, _setup()), env.begin_step(), env)
        rewards[name] = log.rewards
    np.testing.assert_array_equal(rewards["uniform"], rewards["knapsack:recipe"])
    np.testing.assert_array_equal(rewards["uniform"], rewards["knapsack:project"])


def test_zero_variance_groups_do_not_move_the_skill() -> None:
    world = World(SMALL, 0)
    before = world.logits().copy()
    prompts = np.repeat(np.array([1, 2, 3]), 4)
    groups = np.repeat(np.arange(3), 4)
    rewards = np.array([0.0] * 4 + [1.0] * 4 + [0.0] * 4)
    world.update(Rollouts(prompts, groups, rewards, world.success(prompts)))
    np.testing.assert_array_equal(world.logits(), before)
    rewards[8] = 1.0  # one success in the third group: its score is positive, every logit moves up
    g = world.update(Rollouts(prompts, groups, rewards, world.success(prompts)))
    assert g[0] == 0 and g[1] == 0 and g[2] > 0
    assert np.all(world.logits() > before)
    held = slice(SMALL.num_prompts, None)
    assert np.all(world.logits()[held] >= before[held])


def test_loss_norm_budget_divides_by_b_instead_of_the_trained_rollouts() -> None:
    prompts, groups = np.repeat(np.array([1, 2]), 4), np.repeat(np.arange(2), 4)
    rewards = np.array([1.0, 0, 0, 0, 1, 1, 0, 0])
    moved = {}
    for norm in ("trained", "budget"):
        world = World(replace(SMALL, loss_norm=norm), 0)
        world.update(Rollouts(prompts, groups, rewards, world.success(prompts)))
        moved[norm] = world.shared
    assert moved["trained"] / moved["budget"] == pytest.approx(SMALL.budget / 8)


def test_same_seed_same_run_and_other_seed_other_run() -> None:
    a, b = simulate(SMALL, "knapsack:recipe", 1), simulate(SMALL, "knapsack:recipe", 1)
    np.testing.assert_array_equal(a.train_success, b.train_success)
    np.testing.assert_array_equal(a.effective, b.effective)
    c = simulate(SMALL, "knapsack:recipe", 2)
    assert not np.array_equal(a.train_success, c.train_success)


@pytest.mark.parametrize("name", FIXED_TOTAL)
def test_fixed_budget_rules_spend_exactly_b_every_step(name: str) -> None:
    trace = simulate(SMALL, name, 0)
    np.testing.assert_array_equal(trace.spend, np.full(SMALL.steps, SMALL.budget))
    assert trace.cumulative_spend[-1] == SMALL.total_rollouts


def test_dapo_pays_every_round_and_trains_only_on_groups_with_signal() -> None:
    trace = simulate(SMALL, "dapo", 0)
    assert np.all(trace.spend % SMALL.budget == 0) and np.all(trace.spend >= SMALL.budget)
    assert np.all(trace.trained <= SMALL.budget)
    np.testing.assert_array_equal(trace.effective, trace.trained)  # only groups with signal are kept
    assert trace.spend.size < SMALL.steps  # equal rollouts: it spends more per step, so it takes fewer steps
    assert trace.cumulative_spend[-1] >= SMALL.total_rollouts


def test_every_run_stops_at_equal_rollouts() -> None:
    for name in ("uniform", "dapo", "reinforce-ada-pos", "pilot-commit"):
        trace = simulate(SMALL, name, 0)
        assert trace.cumulative_spend[-2] < SMALL.total_rollouts <= trace.cumulative_spend[-1], name


class _Twice(Rule):
    """Generates 3 rollouts of every prompt, then 2 more, and trains only on the last 2."""

    def limits(self, spec: StepSpec) -> Limits:
        return Limits(5 * spec.size, True, 5, 5)

    def next_round(self, log: StepLog) -> Round | None:
        if log.rounds == 2:
            return None
        return Round(np.full(log.size, 3 if log.rounds == 0 else 2, dtype=np.int64))

    def finish(self, log: StepLog) -> Selection:
        return Selection(np.arange(log.rewards.size) >= 3 * log.size)  # rollouts are logged round by round


def test_a_custom_rule_is_charged_for_every_rollout_it_generates() -> None:
    cfg = replace(SMALL, steps=5)
    trace = simulate(cfg, _Twice(), 0)
    m = cfg.prompts_per_step
    np.testing.assert_array_equal(trace.spend[:3], np.full(3, 5 * m))  # 3 + 2 per prompt, 2 of them trained
    np.testing.assert_array_equal(trace.trained[:3], np.full(3, 2 * m))
    assert trace.spend.sum() >= cfg.total_rollouts and trace.spend.size == math.ceil(cfg.total_rollouts / (5 * m))


@pytest.mark.parametrize("name", [r for r in rule_names() if r != "dapo"])
def test_at_p_one_half_rules_that_train_every_rollout_keep_uniforms_signal(name: str) -> None:
    # every prompt at p = 0.5 forever: an informed rule has nothing to exploit; uniform's ratio is
    # 1 - 2 * 0.5^8 = 0.992, and rules that train on every rollout stay within 0.03 of it. The two-phase
    # probe of 4 reads p = 0 or 1 for 1/8 of the prompts, which keep their 4 identical rewards: it loses
    # about 0.04. Rules that choose rollouts by reward (Reinforce-Ada, Pilot-Commit) train on fewer.
    cfg = replace(FROZEN_HALF, steps=40)
    trace, uniform = simulate(cfg, name, 0), simulate(cfg, "uniform", 0)
    base = uniform.effective.sum() / uniform.spend.sum()
    assert abs(base - (1 - 2 * 0.5**8)) < 0.01
    ratio = trace.effective.sum() / trace.spend.sum()
    if name.startswith(("reinforce-ada", "pilot-commit")):
        assert trace.trained.sum() < trace.spend.sum() and ratio < base
    else:
        np.testing.assert_array_equal(trace.trained, trace.spend)
        assert abs(ratio - base) < (0.05 if name == "knapsack:two-phase" else 0.03), ratio
    np.testing.assert_allclose(trace.train_success, 0.5)  # nothing learns with zero step sizes


def test_dapo_at_p_one_half_pays_a_whole_round_to_refill_a_few_groups() -> None:
    trace = simulate(replace(FROZEN_HALF, steps=40), "dapo", 0)
    refill = trace.spend > FROZEN_HALF.budget
    assert refill.any() and np.all(trace.trained == FROZEN_HALF.budget)  # always a full batch of M groups
    assert trace.effective.sum() / trace.spend.sum() < 0.95


def test_knapsack_budgets_sum_to_the_budget_and_go_past_n_after_epoch_one() -> None:
    trace = simulate(SMALL, "knapsack:recipe", 0)
    later = [s for s in trace.snapshots if s[0] >= 2 * SMALL.num_prompts // SMALL.prompts_per_step]
    assert later
    for _, _p, counts in later:
        assert counts.sum() == SMALL.budget
        assert counts.max() > SMALL.n and counts.min() >= 2
    assert trace.budget_max.max() > SMALL.n


def test_two_phase_probes_then_allocates_in_the_first_step() -> None:
    env = _env()
    spec = env.begin_step()
    log, _ = run_step(make_rule("knapsack:two-phase", _setup()), spec, env)
    assert log.spent == SMALL.budget and log.generations == 2
    assert log.counts.min() >= 4 and log.counts.max() > SMALL.n  # the probe of 4 is a floor; budgets vary


def test_knapsack_beats_uniform_on_the_paper_world() -> None:
    cfg = replace(SMALL, num_prompts=2048, prompts_per_step=64, steps=150)
    traces = {name: [simulate(cfg, name, s) for s in (0, 1)] for name in ("uniform", "knapsack:recipe")}
    rows, _ = summarize(traces)
    eff = {r.rule: r.stats["eff_ratio"].mean for r in rows}
    final = {r.rule: r.stats["train_final"].mean for r in rows}
    assert eff["knapsack:recipe"] > 1.15 * eff["uniform"]
    assert final["knapsack:recipe"] > final["uniform"]


def test_registries_reject_duplicates_and_list_names() -> None:
    for name in ("uniform", "knapsack:recipe", "knapsack:project", "knapsack:two-phase", "reinforce-ada"):
        assert name in rule_names()
    with pytest.raises(ValueError, match="rule 'uniform' is already registered"):
        register_rule("uniform")(lambda setup: make_rule("uniform", setup))
    with pytest.raises(ValueError, match=r"rule='nope' is not a registered rule; valid: \[.*'uniform'"):
        make_rule("nope")
    with pytest.raises(ValueError, match="initial distribution 'paper' is already registered"):
        register_init("paper")(lambda rng, size: np.zeros(size))
    with pytest.raises(ValueError, match=r"init='nope' is not a registered initial distribution; valid: \["):
        replace(SMALL, init="nope")
    with pytest.raises(ValueError, match="prompts_per_step must be <= 640"):
        replace(SMALL, prompts_per_step=641)
    with pytest.raises(ValueError, match=r"loss_norm must be one of"):
        replace(SMALL, loss_norm="mean")


def test_summary_helpers() -> None:
    x = np.array([0.0, 10.0, 20.0])
    assert first_crossing(x, np.array([0.1, 0.3, 0.5]), 0.4) == pytest.approx(15.0)
    assert math.isnan(first_crossing(x, np.array([0.1, 0.3, 0.5]), 0.6))
    s = mean_ci([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert mean_ci([np.nan, 1.0]).n == 1


def test_compare_pairs_seeds_and_counts_rules_that_never_reach_the_target() -> None:
    cfg = replace(SMALL, steps=40)
    traces = {name: [simulate(cfg, name, s) for s in (0, 1, 2)] for name in ("uniform", "knapsack:two-phase", "dapo")}
    rows = {r.rule: r for r in compare(traces, budget=cfg.total_rollouts, step_budget=cfg.budget, num_prompts=640)}
    base = rows["uniform"].stats
    assert base["speedup"].mean == 1.0 and base["d_train"].mean == 0.0 and base["d_train"].half == 0.0
    two = rows["knapsack:two-phase"]
    diffs = [
        np.interp(cfg.total_rollouts, t.cumulative_spend, t.train_success)
        - np.interp(cfg.total_rollouts, u.cumulative_spend, u.train_success)
        for t, u in zip(traces["knapsack:two-phase"], traces["uniform"], strict=True)
    ]
    assert two.stats["d_train"].mean == pytest.approx(np.mean(diffs))
    assert two.stats["speedup"].mean > 1.0 and two.reached == 3
    assert rows["dapo"].seeds == 3 and rows["dapo"].reached == rows["dapo"].stats["speedup"].n
    with pytest.raises(ValueError, match=r"baseline='greso' is not among the rules run"):
        compare(traces, budget=1, step_budget=1, num_prompts=1, baseline="greso")


def test_regimes_are_registered_and_run_at_equal_rollouts() -> None:
    assert {"many-epochs", "few-epochs", "single-pass"} <= set(REGIMES.names())
    assert REGIMES.get("single-pass").epochs() < 1 < REGIMES.get("few-epochs").epochs() < 2
    assert REGIMES.get("many-epochs").epochs() > 10
    base = replace(SMALL, prompts_per_step=16, num_heldout=10)
    tables = run_regimes(["single-pass"], ["uniform", "knapsack:project"], [0, 1], base=base, steps=5)
    text = tables["single-pass"]
    assert "### single-pass" in text and "| knapsack:project | 1.00 ± 0.00 | 2/2 |" in text  # no estimates: uniform
    with pytest.raises(ValueError, match=r"regime='x' is not a registered training regime"):
        run_regimes(["x"], ["uniform"], [0])


def test_cli_prints_a_table_and_writes_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--rules", "uniform,knapsack:recipe", "--prompts", "400", "--heldout", "50"]
    argv += ["--prompts-per-step", "32", "--steps", "40", "--seeds", "2", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| knapsack:recipe |" in out and "| uniform |" in out
    for name in ("curves.png", "budget_vs_p.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 1000
    assert main(["simulate", "--rules", "nope", "--steps", "2", "--no-progress", "--out", str(tmp_path)]) == 2


def _trace(rule: str, seed: int, spend: list[int], heldout: list[float], effective: list[int]) -> RunTrace:
    steps = len(spend)
    zeros = np.zeros(steps, dtype=np.int64)
    return RunTrace(rule, seed, np.asarray(spend), zeros, np.asarray(effective), zeros, zeros, zeros,
                    np.linspace(0.1, 0.5, steps + 1), np.asarray(heldout, dtype=np.float64))  # fmt: skip


def test_curves_show_every_rule_against_rollouts_in_a_labelled_95_ci_band(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import knapsack_rl.sim.plots as plots

    caught = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, dpi: caught.append(fig) or path)
    start = [0.10, 0.20, 0.40]  # held-out success before training, per seed
    traces = {
        "uniform": [_trace("uniform", s, [100] * 20, [start[s], *np.linspace(0.3, 0.6, 20)], [30 + s] * 20)
                    for s in range(3)],
        "dapo": [_trace("dapo", s, [200] * 10, [start[s], *np.linspace(0.3, 0.5, 10)], [50 + 10 * s] * 10)
                 for s in range(3)],
    }  # fmt: skip
    plots.plot_curves(traces, tmp_path / "curves.png")
    (fig,) = caught
    train, heldout, eff = fig.axes
    grid = np.linspace(0.0, 2000.0, 200) / 1e6  # both rules generate 2000 rollouts
    for ax in (train, heldout, eff):
        assert ax.get_xlabel() == "rollouts generated (M)"
        for line in ax.get_lines():  # every rule on the rollouts axis, the effective gradient ratio's included
            np.testing.assert_allclose(line.get_xdata(), grid)
    legend = [t.get_text() for t in train.get_legend().get_texts()]
    assert legend == ["uniform", "dapo", "band: 95% CI of the mean over seeds (Student t)"]
    vertices = heldout.collections[0].get_paths()[0].vertices  # uniform's band
    at_zero = vertices[np.isclose(vertices[:, 0], 0.0), 1]
    half = 4.303 * np.std(start, ddof=1) / np.sqrt(3)  # t(0.975, 2 df) * sd / sqrt(n), by hand
    np.testing.assert_allclose([at_zero.min(), at_zero.max()], [np.mean(start) - half, np.mean(start) + half],
                               rtol=1e-3)  # fmt: skip
    uniform_eff, dapo_eff = (line.get_ydata() for line in eff.get_lines())
    np.testing.assert_allclose(uniform_eff[-1], np.mean([0.30, 0.31, 0.32]))  # the last 10-step window's mean
    np.testing.assert_allclose(dapo_eff[-1], np.mean([0.25, 0.30, 0.35]))  # dapo's one window ends at 2000
    assert np.isnan(dapo_eff[:-1]).all() and np.isnan(uniform_eff[: int(199 * 1000 / 2000)]).all()


def test_cli_regimes_print_one_table_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", "--regimes", "single-pass,many-epochs", "--rules", "uniform,pilot-commit", "--steps", "4"]
    argv += ["--heldout", "20", "--prompts-per-step", "16", "--seeds", "2", "--out", str(tmp_path)]
    assert main([*argv, "--no-progress", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert out.count("| rule | speed-up vs uniform |") == 2 and "| pilot-commit |" in out
    assert (tmp_path / "regimes.md").read_text().count("### ") == 2
    assert main([*argv, "--prompts", "100", "--no-progress"]) == 2  # --prompts and --regimes exclude each other


def test_sim_never_imports_torch_or_matplotlib() -> None:
    code = (
        "import sys, knapsack_rl.sim.cli, knapsack_rl.sim, knapsack_rl.sim.regimes, knapsack_rl.rules.interface; "
        "assert not {'torch', 'matplotlib'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_greso_skips_prompts_whose_last_group_had_no_signal() -> None:
    cfg = replace(SMALL, init="hard", steps=80)  # many all-wrong groups
    env, rule = _env(cfg), make_rule("greso", _setup(cfg))
    for _ in range(cfg.steps):
        log, selection = run_step(rule, env.begin_step(), env)
        env.end_step(log, selection)
    assert env.drawn > cfg.steps * cfg.prompts_per_step * 1.1  # skipped prompts were replaced from the stream


def test_project_knapsack_never_starves_an_estimated_prompt() -> None:
    """The project preset scores posteriors: after the cold start every prompt keeps at least min_n = 2
    (none is cut to negative_n as "hopeless") and the hardest get more than n."""
    later_from = 2 * SMALL.num_prompts // SMALL.prompts_per_step
    trace = simulate(replace(SMALL, steps=120), "knapsack:project", 0)
    counts = np.concatenate([s[2] for s in trace.snapshots if s[0] >= later_from])
    assert counts.min() >= 2 and counts.max() > SMALL.n
