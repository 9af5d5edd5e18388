"""The one mapping from each engine's metric names to the report's (canonical) names.

``knapsack-rl report`` reads runs of four kinds (:mod:`knapsack_rl.report.runs`) and turns every step of
each into a row of the **canonical names** below, which :func:`knapsack_rl.report.summary.summarize_rows`
reads. An own training loop can write those rows itself (one JSON object per line: the documented own-loop
schema, docs/cluster.md).

Per step (``train/*``: a step that trained):

- ``step``: the engine's step (an integer, increasing);
- ``train/rollouts_generated`` (rollouts generated in the step, trained on or not) and
  ``train/rollouts_total`` (their running sum): the axis of compute; an own loop writes either;
- ``train/tokens_generated`` and ``train/tokens_total``: response tokens generated (the engine's mean
  response length of the step x its rollouts; an own loop writes either);
- ``train/step_s`` and ``train/wall_s``: seconds of the step and their running sum (evaluation
  excluded where the engine times it apart; an own loop writes either);
- ``train/epoch`` (0-based pass over the prompts), and what the allocation rules log in every engine:
  ``train/effective_prompts`` (prompts with signal), ``train/effective_grad_ratio``,
  ``train/effective_prompt_ratio`` (the fraction of groups with mixed rewards), ``alloc/budget_*``,
  ``alloc/solve_s``, ``tracker/prompts``.

Evaluation (:data:`EVAL_NAMES`, one row per engine name): ``eval/avg@k`` (mean accuracy of k samples per
prompt), ``eval/pass@k`` (at least one of k right), ``eval/maj@k`` (the majority answer right), each
optionally followed by ``/<level>`` (a difficulty level, or verl's data source); ``train_eval/...`` the same
on training prompts (the reference trainer's ``eval_train_prompts``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENGINES = ("knapsack-rl", "trl", "verl", "jsonl")
"""The kinds of run the report reads: the reference trainer, TRL, verl, an own loop's JSONL."""


@dataclass(frozen=True)
class EvalName:
    """How one engine names one evaluation metric: a regular expression over its name, and the canonical
    name as a template over the expression's groups (``{eval_k}``: the k the manifest gives)."""

    engine: str
    pattern: str
    canonical: str
    note: str


_SPLIT = r"(?P<split>(?:train_)?eval)/"
_REST = r"(?P<rest>/.+)?"
# fmt: off
EVAL_NAMES = (
    EvalName("knapsack-rl", _SPLIT + r"avg@(?P<k>\d+)" + _REST, "{split}/avg@{k}{rest}", "this version"),
    EvalName("knapsack-rl", _SPLIT + r"mean@(?P<k>\d+)" + _REST, "{split}/avg@{k}{rest}",
             "earlier versions (still logged): the same value"),
    EvalName("knapsack-rl", _SPLIT + r"pass@(?P<k>\d+)", "{split}/pass@{k}",
             "unbiased estimator (Chen et al. 2021), j = 1, 2, 4, ..., k"),
    EvalName("knapsack-rl", _SPLIT + r"best@(?P<k>\d+)", "{split}/pass@{k}",
             "earlier versions (still logged): at least one of k right, = pass@k"),
    EvalName("knapsack-rl", _SPLIT + r"maj@(?P<k>\d+)", "{split}/maj@{k}", "majority answer right"),
    EvalName("trl", r"eval_reward", "eval/avg@{eval_k}",
             "TRL's mean reward of its eval completions: avg@k when the reward is a 0/1 success; "
             "k = num_generations_eval (else num_generations), given as eval_k in the manifest"),
    EvalName("verl", r"val-core/(?P<source>[^/]+)/(?P<var>[^/]+)/mean@(?P<k>\d+)", "eval/avg@{k}/{source}",
             "per data source; also eval/avg@k when the run has one source"),
    EvalName("verl", r"val-core/(?P<source>[^/]+)/(?P<var>[^/]+)/best@(?P<k>\d+)/mean", "eval/pass@{k}/{source}",
             "verl's bootstrap (draws with replacement), not the unbiased estimator: lower than pass@k"),
    EvalName("verl", r"val-core/(?P<source>[^/]+)/(?P<var>[^/]+)/maj@(?P<k>\d+)/mean", "eval/maj@{k}/{source}",
             "verl's bootstrap of majority voting (needs a 'pred' from the reward)"),
    *(EvalName("jsonl", _SPLIT + kind + r"@(?P<k>\d+)" + _REST, "{split}/" + kind + "@{k}{rest}", "canonical")
      for kind in ("avg", "pass", "maj")),
)
# fmt: on
"""Every engine's evaluation names and their canonical names (docs/cluster.md prints this table)."""

STEP_KEYS: dict[str, dict[str, str]] = {
    "knapsack-rl": {"length": "rollout/response_len_mean", "seconds": "perf/step_s"},
    "trl": {"length": "completions/mean_length", "seconds": "step_time"},
    "verl": {"length": "response_length/mean", "seconds": "timing_s/step"},
    "jsonl": {},
}
"""Per engine, the per-step mean response length (x ``train/rollouts_generated`` = ``train/tokens_generated``)
and the seconds of a step (``train/step_s``); TRL's run wall time is the ``train_runtime`` of its last log row."""

_COMPILED = tuple((n, re.compile(n.pattern)) for n in EVAL_NAMES)
_CANONICAL = re.compile(r"(?P<split>(?:train_)?eval)/(?P<kind>avg|pass|maj)@(?P<k>\d+)(?P<rest>/.+)?")


def canonical_eval(engine: str, name: str, *, eval_k: int | None = None) -> str | None:
    """The canonical name of ``engine``'s metric ``name`` (None: not an evaluation metric of that engine).

    Raises:
        ValueError: a TRL ``eval_reward`` without ``eval_k`` (TRL's log does not say k).
    """
    for entry, pattern in _COMPILED:
        if entry.engine != engine:
            continue
        match = pattern.fullmatch(name)
        if match is None:
            continue
        if "{eval_k}" in entry.canonical and eval_k is None:
            raise ValueError(
                f"TRL logs {name!r} without the number of samples per prompt; give eval_k (TRL's "
                "num_generations_eval, else num_generations) in the manifest"
            )
        groups = {k: v or "" for k, v in match.groupdict().items()}
        return entry.canonical.format(**groups, eval_k=eval_k)
    return None


def canonical_metric(name: str) -> str:
    """A primary metric as a user writes it, in canonical form: ``avg@4`` or ``eval/mean@4`` is ``eval/avg@4``.

    Raises:
        ValueError: one line, if ``name`` is no evaluation metric of the reference trainer or the canonical set.
    """
    full = name if "/" in name.split("@")[0] else f"eval/{name}"
    for engine in ("knapsack-rl", "jsonl"):
        found = canonical_eval(engine, full)
        if found is not None:
            return found
    raise ValueError(
        f"eval metric {name!r} is not an evaluation metric: write eval/avg@k, eval/pass@k or eval/maj@k "
        "(optionally /<level>), or avg@k"
    )


def split_canonical(name: str) -> tuple[str, str, int, str] | None:
    """``(split, kind, k, rest)`` of a canonical evaluation name (``eval/avg@4/L1`` -> ``("eval", "avg", 4,
    "/L1")``); None for another name."""
    m = _CANONICAL.fullmatch(name)
    if m is None:
        return None
    return m["split"], m["kind"], int(m["k"]), m["rest"] or ""


def mapping_markdown() -> str:
    """:data:`EVAL_NAMES` as the Markdown table of docs/cluster.md."""
    lines = ["| engine | its name (regular expression) | canonical name | note |", "|---|---|---|---|"]
    for n in EVAL_NAMES:
        lines.append(f"| {n.engine} | `{n.pattern}` | `{n.canonical}` | {n.note} |")
    return "\n".join(lines)
