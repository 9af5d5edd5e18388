"""Misbehaving rewards for the containment tests (module level: worker processes import them by reference)."""

import time

import numpy as np

from knapsack_rl.tasks import register_reward


@register_reward("test_sleepy")
def sleepy(responses, answers):
    """Sleeps 30 s on a response "sleep", else exact match."""
    for r in responses:
        if r == "sleep":
            time.sleep(30)
    return np.array([float(r == a) for r, a in zip(responses, answers, strict=True)])


@register_reward("test_raises")
def raises(responses, answers):
    """Raises on a response "boom", else exact match."""
    if "boom" in responses:
        raise ZeroDivisionError("boom in the reward")
    return np.array([float(r == a) for r, a in zip(responses, answers, strict=True)])


@register_reward("test_nan")
def nan_reward(responses, answers):
    """NaN on a response "nan", else exact match."""
    return np.array([np.nan if r == "nan" else float(r == a) for r, a in zip(responses, answers, strict=True)])


@register_reward("test_nan_in_process", in_process=True)
def nan_in_process(responses, answers):
    """In-process: NaN on "nan", raises on "boom", else exact match."""
    if "boom" in responses:
        raise KeyError("boom")
    return np.array([np.nan if r == "nan" else float(r == a) for r, a in zip(responses, answers, strict=True)])


@register_reward("test_dies")
def dies(responses, answers):
    """Kills its own process on a response "die"."""
    import os

    if "die" in responses:
        os._exit(3)
    return np.array([float(r == a) for r, a in zip(responses, answers, strict=True)])
