"""Untrusted answers never run: the table of admitted reasoning-gym data sets, the comparators, the guard.

Every test uses the real, installed reasoning-gym. Payload answers try to create a marker file; it must
never appear, whatever the data set.
"""

import contextlib
import json
import re
import subprocess
from types import MappingProxyType

import numpy as np
import pytest
import reasoning_gym
from reasoning_gym.factory import DATASETS

from knapsack_rl.tasks import GymDataset, Scorer, ScoringConfig, TaskConfig
from knapsack_rl.tasks import gym_scoring as gs
from knapsack_rl.tasks.gym import gym_reward


def payloads(marker):
    """Answers that run ``touch marker`` when evaluated by eval, exec or sympy.parse_expr."""
    touch = f"__import__('os').system('touch {marker}')"
    return [
        touch,
        f"[{touch}]",
        f"({touch}, 1)",
        f"(lambda: {touch})()",
        f"exec(\"import os; os.system('touch {marker}')\")",
        f'eval("{touch}")',
        f"Symbol('x') + {touch}",  # sympy-flavoured: parse_expr evaluates the call
        f"x**2 + 0*__import__('subprocess').call(['touch', '{marker}'])",
        f"Integral(x, x) + Function('f')({touch})",
        f"24 + 0*{touch}",  # countdown / puzzle24-flavoured
        f"10*(8 - 5) - 6 + 0*{touch}",
        f"  {touch}\n",
    ]


ADMITTED = sorted(set(gs.AUDITED) | set(gs.COMPARATORS))


def _record(name, config=None, index=0):
    """A prompt's in-memory extras for entry ``index`` of data set ``name`` (seed 5), as draw() makes it."""
    entry = reasoning_gym.create_dataset(name, **(config or {}), seed=5, size=index + 1)[index]
    entry = json.loads(json.dumps({k: entry[k] for k in ("question", "answer", "metadata")}, default=str))
    return {
        "reasoning_gym": {"dataset": name, "config": config or {}, "split": "train", "index": index, "entry": entry}
    }


def test_every_reasoning_gym_data_set_is_admitted_or_refused():
    tables = [set(gs.AUDITED), set(gs.COMPARATORS), set(gs.REFUSED)]
    assert set().union(*tables) == set(DATASETS)  # a new release's data set fails here until it is audited
    assert sum(len(t) for t in tables) == len(DATASETS)  # no name in two tables
    assert {"string_insertion", "spiral_matrix", "binary_matrix", "n_queens", "countdown", "puzzle24"} <= set(
        gs.COMPARATORS
    )
    assert all(gs.refusal(name) is None for name in ADMITTED)
    assert gs.refusal("made_up_set") == "it is not in knapsack-rl's audited table of reasoning-gym data sets"


@pytest.mark.parametrize("name", [*sorted(gs.REFUSED), "made_up_set"])
def test_refused_data_sets_are_refused_when_the_config_is_read(name):
    reason = gs.REFUSED.get(name, "it is not in knapsack-rl's audited table")
    expected = re.escape(f"reasoning-gym data set '{name}' is refused: {reason}")
    with pytest.raises(ValueError, match=rf"^{expected}") as err:
        GymDataset(name)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=rf"'{name}' is refused"):
        TaskConfig(source="reasoning_gym", reasoning_gym={"datasets": [{"name": name}]})


def test_payload_answers_never_run_in_any_admitted_scorer(tmp_path):
    marker = tmp_path / "MARKER"
    extras = [_record(name) for name in ADMITTED]  # entry 0 of each admitted data set
    answers = payloads(marker)
    rows = [(j, a) for j in range(len(extras)) for a in answers]
    truths = [extras[j]["reasoning_gym"]["entry"]["answer"] for j, _ in rows]
    with Scorer("reasoning_gym", ScoringConfig(timeout_s=30.0)) as scorer:
        out = scorer([a for _, a in rows], truths, list(range(len(rows))), [extras[j] for j, _ in rows])
        counts = scorer.counts()
    assert not marker.exists()
    assert out.shape == (len(rows),) and ((out >= 0) & (out <= 1)).all()
    assert counts["reward/timeouts"] == counts["reward/killed"] == 0
    for j, answer in rows:  # in-process (gym_reward): some scorers raise on junk, none tries to run it
        try:
            gym_reward([answer], ["-"], [extras[j]])
        except gs.UntrustedCodeError:
            raise
        except Exception:  # e.g. prime_factorization's int() of the payload: a counted failure in a Scorer
            continue
    assert not marker.exists()


def test_refused_data_sets_never_score_even_when_a_record_names_them(tmp_path):
    marker = tmp_path / "MARKER"
    entry = {"question": "q", "answer": payloads(marker)[0], "metadata": {"variable": "x", "integrand": "1"}}
    for name in sorted(gs.REFUSED):
        record = {"reasoning_gym": {"dataset": name, "config": {}, "split": "train", "index": 0, "entry": entry}}
        with pytest.raises(ValueError, match=f"'{name}' is refused"):
            gym_reward(payloads(marker), ["x"] * len(payloads(marker)), [record] * len(payloads(marker)))
        with Scorer("reasoning_gym") as scorer:
            out = scorer(payloads(marker)[:2], ["x", "x"], [1, 2], [record, record])
            assert out.tolist() == [0.0, 0.0] and scorer.counts()["reward/failures"] == 2
    assert not marker.exists()


@pytest.mark.parametrize("name", ["string_insertion", "binary_matrix", "polynomial_multiplication", "countdown"])
def test_the_guard_stops_an_evaluating_scorer_admitted_by_mistake(tmp_path, monkeypatch, name):
    marker = tmp_path / "MARKER"
    monkeypatch.setattr(gs, "AUDITED", MappingProxyType({**gs.AUDITED, name: "admitted by mistake"}))
    monkeypatch.setattr(gs, "COMPARATORS", MappingProxyType({k: v for k, v in gs.COMPARATORS.items() if k != name}))
    entry = dict(reasoning_gym.create_dataset(name, seed=1, size=1)[0])
    for answer in payloads(marker):
        with pytest.raises(gs.UntrustedCodeError, match=rf"data set '{name}'.*tried to run text as code"):
            gs.score_answer(name, {}, answer, entry)
    assert not marker.exists()
    assert eval("1 + 1") == 2  # the guard is idle outside a score


def test_the_guard_refuses_processes_and_unpickling_inside_only(tmp_path):
    import pickle

    marker = tmp_path / "MARKER"
    with pytest.raises(gs.UntrustedCodeError, match=r"\(subprocess.Popen\); blocked"), gs.code_blocked("a test"):
        subprocess.run(["touch", str(marker)], check=False)
    code = compile(f"open({str(marker)!r}, 'w')", "<string>", "exec")  # compiled before: only exec is left
    swallowed = contextlib.suppress(gs.UntrustedCodeError)  # a scorer that swallows the refusal still fails
    with pytest.raises(gs.UntrustedCodeError, match=r"\(exec\); blocked"), gs.code_blocked("a test"), swallowed:
        exec(code)
    blob = pickle.dumps(GymDataset("gcd"))
    with pytest.raises(gs.UntrustedCodeError, match=r"pickle\.find_class"), gs.code_blocked("a test"):
        pickle.loads(blob)
    assert not marker.exists()
    subprocess.run(["touch", str(marker)], check=True)  # and idle outside
    assert marker.exists()


def test_parse_literal_and_evaluate_arithmetic_accept_only_their_grammar(tmp_path):
    assert gs.parse_literal(" [['1', 2], (-3.5, +4), True, None] ") == [["1", 2], (-3.5, 4), True, None]
    assert gs.evaluate_arithmetic("(10 - 4) * 8 / (1 + 1) - -3") == 27
    for text in [*payloads(tmp_path / "M"), "[1]*3", "x", "{1: 2}", "{1}", "b'x'", "1j", "[*a]", "a.b", "f(1)"]:
        with pytest.raises(ValueError):
            gs.parse_literal(text)
    bad = ["2**3", "7 % 2", "3 ^ 1", "3 // 2", "x + 1", "'1' + 1", "(1, 2)", "[1]", "True + 1", "1 < 2", "1e999"]
    for text in [*bad, "9" * 5000]:
        with pytest.raises(ValueError):
            gs.evaluate_arithmetic(text)
    with pytest.raises(ValueError, match="longer than"):
        gs.evaluate_arithmetic("1+" * gs.MAX_EXPRESSION_CHARS + "1")
    with pytest.raises(ValueError, match="does not parse"):
        gs.parse_literal("[" * 5000 + "]" * 5000)  # nested too deeply for the parser: an error, not a crash
    with pytest.raises(ZeroDivisionError):
        gs.evaluate_arithmetic("1 / (2 - 2)")
    assert not (tmp_path / "M").exists()


# ------------------------------------------------------------ agreement
def _variants(name, entry):
    """Correct, partly correct and wrong answers for one entry (all benign: the data set's own scorer
    evaluates some of them in this test)."""
    ans = str(entry["answer"])
    meta = entry["metadata"]
    common = [ans, "", " ", ans + " ", ans[::-1], ans[:-1], "garbage", "[", "[1, 2"]
    if name == "string_insertion":
        return [*common, repr(list(ans)), repr(tuple(ans)), repr(ans), json.dumps(list(ans)), repr(list(ans[::-1]))]
    if name == "spiral_matrix":
        items = ans.split()
        return [*common, "[" + ", ".join(items) + "]", "(" + ",".join(items) + ")", str(items), str(items[::-1])]
    if name == "binary_matrix":
        rows = [[int(x) for x in row.split()] for row in ans.split("\n")]
        flipped = [[1 - rows[0][0], *rows[0][1:]], *rows[1:]]
        return [*common, str(rows), str(flipped), str(tuple(map(tuple, rows))), ans.replace("\n", " ")]
    if name == "n_queens":
        board = [row.split() for row in ans.split("\n")]
        moved = [board[-1], *board[:-1]]
        return [*common, str(board), str(moved), "\n".join(" ".join(r) for r in moved)]
    if name == "number_sorting":
        nums = [float(x) for x in meta["sorted_numbers"]]
        return [*common, json.dumps(nums), json.dumps(nums[::-1]), json.dumps([x + 0.5 for x in nums]),
                json.dumps([x + 3 for x in nums]), json.dumps(nums[:-1]), "{}", "[[1]]"]  # fmt: skip
    if name == "bitwise_arithmetic":
        value = int(ans, 16)
        return [*common, str(value), bin(value), oct(value), hex(value + 1), ans.upper(), f" {ans} "]
    expr = ans  # countdown, puzzle24: an arithmetic expression over the given numbers
    return [*common, expr.replace(" ", ""), expr.replace("+", "-", 1), expr.replace("*", "+", 1),
            expr + " = 24", "1 + 2 + 3 + 4", "(" + expr + ")", expr + " + 0"]  # fmt: skip


AGREEMENT = {
    "string_insertion": 80,
    "spiral_matrix": 80,
    "binary_matrix": 80,
    "n_queens": 40,
    "number_sorting": 80,
    "bitwise_arithmetic": 80,
    "countdown": 40,
    "puzzle24": 25,
}


@pytest.mark.parametrize("name", sorted(gs.COMPARATORS))
def test_comparators_score_as_the_data_sets_own_scorers(name):
    assert set(AGREEMENT) == set(gs.COMPARATORS)
    dataset = reasoning_gym.create_dataset(name, seed=11, size=AGREEMENT[name])
    seen = set()
    for i in range(AGREEMENT[name]):
        entry = json.loads(json.dumps(dataset[i], default=str))  # as held in a prompt's extras
        for answer in _variants(name, entry):
            ours = gs.score_answer(name, {}, answer, entry)
            theirs = dataset.score_answer(answer, json.loads(json.dumps(entry)))
            assert np.isclose(ours, theirs), (name, i, answer, ours, theirs)
            seen.add(ours)
    assert 1.0 in seen and len(seen) >= 2  # full marks and something less were both exercised
