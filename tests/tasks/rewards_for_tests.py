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


@register_reward("test_spawns")
def spawns(responses, answers):
    """On a response "spawn": starts `sleep 600`, writes its pid to the file named by the answer, then hangs."""
    import subprocess
    from pathlib import Path

    for r, a in zip(responses, answers, strict=True):
        if r == "spawn":
            child = subprocess.Popen(["sleep", "600"])
            Path(a).write_text(str(child.pid))
            time.sleep(60)
    return np.zeros(len(responses))


@register_reward("test_hog")
def hog(responses, answers):
    """On a response "hog": allocates 1 GiB (and returns 1.0 if that worked), else exact match."""
    out = []
    for r, a in zip(responses, answers, strict=True):
        if r == "hog":
            block = bytearray(1 << 30)
            out.append(float(len(block) == 1 << 30))
        else:
            out.append(float(r == a))
    return np.array(out)


@register_reward("test_spins")
def spins(responses, answers):
    """On a response "spin": burns CPU for up to 30 s, else exact match."""
    for r in responses:
        if r == "spin":
            end = time.process_time() + 30
            while time.process_time() < end:
                pass
    return np.array([float(r == a) for r, a in zip(responses, answers, strict=True)])


@register_reward("test_string")
def string_reward(responses, answers):
    """Returns the string "1.0" for a response "str", else exact match (as floats)."""
    return ["1.0" if r == "str" else float(r == a) for r, a in zip(responses, answers, strict=True)]


@register_reward("test_string_in_process", in_process=True)
def string_in_process(responses, answers):
    """In-process: returns the string "1.0" for a response "str", else exact match (as floats)."""
    return ["1.0" if r == "str" else float(r == a) for r, a in zip(responses, answers, strict=True)]


@register_reward("test_math_verify_fast")
def math_verify_fast(responses, answers):
    """The math_verify reward with math_verify's own limits at 1 s per step (so its timeouts come fast)."""
    from knapsack_rl.tasks.base import math_verify_scores

    return math_verify_scores(responses, answers, timeout_s=1)
