"""KnapsackConfig: one declaration per setting, validated once, presets explicit, flat names routed."""

from __future__ import annotations

import json

import pytest

from knapsack_rl import AllocationConfig, KnapsackConfig, TrackerConfig
from knapsack_rl.core.config import flat_fields, knapsack_from_mapping, preset_names


def test_presets_are_explicit_and_complete() -> None:
    assert preset_names() == ["project", "recipe", "signal", "two-phase"]
    recipe = KnapsackConfig.preset("recipe")
    a = recipe.allocation
    assert (a.objective, a.fallback, a.negative_n, a.positive_n) == ("recipe", True, 2, 2)
    assert (a.unestimated_in_zero_pool, a.strict_max_n, a.overflow) == (True, False, "effective")
    assert recipe.tracker == TrackerConfig(estimator="recipe") and recipe.uniform_epochs == 1
    project = KnapsackConfig.preset("project", max_n=64)
    assert project.allocation.max_n == 64 and not project.allocation.fallback and project.posterior
    signal = KnapsackConfig.preset("signal")
    assert (signal.allocation.value, signal.prior, signal.posterior) == ("nonzero", "population", True)
    assert signal.replace(value="paper", prior="beta") == KnapsackConfig.preset("project")
    with pytest.raises(ValueError, match="prior='population' is the prior of a posterior; set posterior=True"):
        KnapsackConfig.preset("signal", posterior=False)
    two = KnapsackConfig.preset("two-phase")
    assert (two.probe_n, two.uniform_epochs, two.posterior) == (4, 0, True)
    with pytest.raises(
        ValueError, match=r"^knapsack.preset='uniform' is not a preset: the uniform baseline is the rule"
    ):
        KnapsackConfig.preset("uniform")
    with pytest.raises(
        ValueError, match=r"^setting 'rule' in knapsack was renamed 'allocate' \(allocate: false is the"
    ):
        knapsack_from_mapping({"rule": "uniform"})
    assert knapsack_from_mapping({"allocation": {"max_n": 64}, "posterior": False}, n=4) == KnapsackConfig.preset(
        "project", max_n=64, posterior=False, n=4
    )
    with pytest.raises(ValueError, match=r"preset='best' is not a registered preset; valid: \['project'"):
        KnapsackConfig.preset("best")


def test_flat_names_are_unique_and_routed() -> None:
    paths = flat_fields(KnapsackConfig)
    assert paths["max_n"] == ("allocation", "max_n") and paths["estimator"] == ("tracker", "estimator")
    assert paths["allocate"] == ("allocate",) and "rule" not in paths
    cfg = KnapsackConfig().replace(max_n=64, estimator="beta", probe_n=4)
    assert (cfg.allocation.max_n, cfg.tracker.estimator, cfg.probe_n) == (64, "beta", 4)
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['max_nn'\]; valid: \["):
        KnapsackConfig().replace(max_nn=3)


def test_round_trip_through_json() -> None:
    cfg = KnapsackConfig.preset("recipe", beta_prior=(2.0, 3.0))
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["tracker"]["beta_prior"] == [2.0, 3.0]
    assert KnapsackConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['extra'\] in knapsack.allocation"):
        KnapsackConfig.from_dict({"allocation": {"extra": 1}})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fallback": "false"}, r"fallback must be true or false \(a bool\); got fallback='false' \(str\)"),
        ({"posterior": "no"}, r"posterior must be true or false"),
        ({"alpha": 1.5}, r"alpha must be < 1.0; got alpha=1.5"),
        ({"negative_n": -1}, r"negative_n must be >= 0; got negative_n=-1"),
        ({"max_n": 4}, r"with strict_max_n=True, n must be <= max_n; got n=8, max_n=4"),
        ({"positive_n": 200}, r"with strict_max_n=True, positive_n must be <= max_n; got positive_n=200, max_n=128"),
        ({"overflow": "effective"}, r"overflow=.effective. spreads .* strict_max_n=True forbids"),
        ({"overflow": "recipe", "strict_max_n": False}, r"overflow=.recipe. was renamed overflow=.effective."),
        ({"allocate": "no"}, r"allocate must be true or false \(a bool\); got allocate='no' \(str\)"),
        ({"rule": "uniform"}, r"^setting 'rule' was renamed 'allocate' \(allocate: false is the uniform baseline"),
        ({"uniform_epochs": -1}, r"uniform_epochs must be >= 0; got uniform_epochs=-1"),
        ({"probe_n": 200}, r"probe_n must be <= max_n with strict_max_n=True; got probe_n=200, max_n=128"),
        ({"value": "nope"}, r"value='nope' is not a registered value function"),
        ({"solver": "magic"}, r"solver must be one of \['greedy', 'dense', 'threshold', 'dp'\]; got solver='magic'"),
        ({"n": 2**70}, r"n must be <= 9223372036854775807"),
    ],
)
def test_bad_settings_name_every_value(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KnapsackConfig().replace(**changes)


def test_alpha_and_counts_are_checked_even_when_never_used() -> None:
    """Issue: alpha, negative_n, positive_n were checked only at the first allocate() call (never for uniform)."""
    with pytest.raises(ValueError, match=r"alpha must be > 0.0"):
        KnapsackConfig(allocate=False).replace(alpha=0.0)
    with pytest.raises(ValueError, match=r"allocation must be an AllocationConfig; got dict"):
        KnapsackConfig(allocation={"n": 8})  # type: ignore[arg-type]
    assert AllocationConfig(min_n=1).min_n == 1  # a group of one is defined (advantage 0), not forbidden
