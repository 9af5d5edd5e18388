"""reasoning-gym as a task source: any of its data sets by name and config, mixed by weight, in three
disjoint, independently drawn splits, scored with the data set's own ``score_answer``.

reasoning-gym (``pip install 'knapsack-rl[gym]'``) generates procedural reasoning problems; entry ``i`` of
a data set with seed ``s`` is a pure function of (config, s, i) and carries its own ``question``,
``answer`` and ``metadata``. This module turns a mix of data sets into :class:`PromptSet` splits:

* **Admission.** Only the data sets of :mod:`knapsack_rl.tasks.gym_scoring`'s table may be named: those
  whose ``score_answer`` was audited not to evaluate the answer, and those scored by an exact comparator
  of that module instead; any other name is refused when the config is read.
* **Prompt.** ``prompt="question"`` uses the entry's question text. ``prompt="compact"`` uses a short
  template built from the entry's metadata (:data:`TEMPLATES`, e.g. ``chain_sum``: ``"4-1-7="``), for the
  embedded character-level model with its 64 positions. The prompt's ``extras`` hold a reference
  ``{"reasoning_gym": {"dataset", "config", "split", "index"}}`` and, in memory, the entry it names
  (question, answer, metadata), so the score is the data set's ``score_answer(response, entry)`` (or its
  comparator's).
* **Files.** A file written by :func:`knapsack_rl.tasks.verl_data.write_verl` carries only the reference:
  the entry is regenerated from the run's config (:func:`entry_of`; entry ``index`` of a data set with
  seed ``s`` is a pure function of (config, s, index)), never read from the file. A reference must name a
  data set and config of the run's mix, a split and an index in range, and regenerate the row's ground
  truth; a file that embeds entries (the old layout) is refused.
* **Ids and splits.** A prompt's id is ``problem_id(prompt text)``. Every prompt text belongs to one
  split by a hash of the text against ``split_weights`` (:func:`knapsack_rl.tasks.arithmetic.split_of`),
  so the splits are disjoint by construction. Each (split, data set) pair has its own generator seed,
  derived from ``(seed, split, data set name and config)``; a split of size n gives each data set a
  count by largest remainder of ``n * weight / sum(weights)`` and takes that data set's first distinct
  prompts of the split. Changing one split's size therefore never changes another split, and growing a
  size only appends prompts.
* **Levels.** ``name``, or ``name/difficulty`` when the data set is given a ``difficulty`` label, plus
  ``/key=value`` for each metadata key in ``level_by`` (e.g. ``spell_backward/word_len=7``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from knapsack_rl.core.registry import Registry
from knapsack_rl.core.validate import check_choice, check_int, check_real
from knapsack_rl.tasks.arithmetic import SPLITS, Split, problem_id, split_of
from knapsack_rl.tasks.base import Extra, PromptSet, register_reward
from knapsack_rl.tasks.gym_scoring import check_admitted, score_answer

TEMPLATES: Registry[Callable[[Mapping[str, Any]], str]] = Registry("template", "compact prompt template")
"""Compact prompt templates by data set name: ``template(entry) -> prompt text``."""


def _expression(entry: Mapping[str, Any]) -> str:
    return str(entry["metadata"]["expression"]).replace(" ", "") + "="


for _name in ("chain_sum", "basic_arithmetic", "products"):
    TEMPLATES.add(_name, _expression)


@TEMPLATES.register("spell_backward")
def _spell_backward(entry: Mapping[str, Any]) -> str:
    """``rev:word=`` (answer: the word backwards)."""
    return f"rev:{entry['metadata']['word']}="


@TEMPLATES.register("caesar_cipher")
def _caesar(entry: Mapping[str, Any]) -> str:
    """``rot<r>:<CIPHER TEXT>=`` (answer: the clear text)."""
    meta = entry["metadata"]
    return f"rot{meta['rotation']}:{meta['cipher_text']}="


@TEMPLATES.register("gcd")
def _gcd(entry: Mapping[str, Any]) -> str:
    """``gcd(a,b)=``."""
    return "gcd(" + ",".join(str(n) for n in entry["metadata"]["numbers"]) + ")="


@TEMPLATES.register("lcm")
def _lcm(entry: Mapping[str, Any]) -> str:
    """``lcm(a,b)=``."""
    return "lcm(" + ",".join(str(n) for n in entry["metadata"]["numbers"]) + ")="


@TEMPLATES.register("count_bits")
def _count_bits(entry: Mapping[str, Any]) -> str:
    """``bits(n)=`` (answer: the number of 1 bits of n)."""
    return f"bits({entry['metadata']['number']})="


@TEMPLATES.register("base_conversion")
def _base_conversion(entry: Mapping[str, Any]) -> str:
    """``<digits>_<from>><to>=``, e.g. ``115_11>15=``."""
    meta = entry["metadata"]
    return f"{meta['source_repr']}_{meta['source_base']}>{meta['target_base']}="


@TEMPLATES.register("letter_counting")
def _letter_counting(entry: Mapping[str, Any]) -> str:
    """``<letter>#<words>=`` (answer: how often the letter occurs in the words)."""
    meta = entry["metadata"]
    return f"{meta['target_letter']}#{' '.join(meta['span'])}="


@dataclass(frozen=True)
class GymDataset:
    """One reasoning-gym data set in a mix."""

    name: str
    """A registered reasoning-gym data set name (``reasoning_gym.factory.DATASETS``)."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of its config (``seed`` and ``size`` are set by the splits)."""
    weight: float = 1.0
    """Share of this data set in every split (weights are normalised over the mix)."""
    difficulty: str | None = None
    """Label appended to the level, ``name/difficulty`` (e.g. ``easy``); None: the level is ``name``."""
    level_by: tuple[str, ...] = ()
    """Metadata keys whose values are appended to the level, e.g. ``("word_len",)``."""
    prompt: str = "question"
    """``question`` (the entry's text) or ``compact`` (the template in :data:`TEMPLATES`)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a reasoning-gym data set name; got name={self.name!r}")
        check_admitted(self.name)
        if not isinstance(self.config, Mapping) or {"seed", "size"} & set(self.config):
            raise ValueError(f"config must be a mapping without seed / size; got config={self.config!r}")
        check_real("weight", self.weight, low=0.0, open_low=True)
        check_choice("prompt", self.prompt, ["question", "compact"])
        if self.prompt == "compact" and self.name not in TEMPLATES:
            raise ValueError(f"prompt='compact' needs a template; data sets with one: {TEMPLATES.names()}")
        object.__setattr__(self, "level_by", tuple(self.level_by))
        object.__setattr__(self, "config", dict(self.config))

    def key(self) -> int:
        """32-bit key of (name, config): the data set's part of every generator seed."""
        blob = json.dumps([self.name, dict(self.config)], sort_keys=True, default=str)
        return int.from_bytes(hashlib.blake2b(blob.encode(), digest_size=4).digest(), "little")


@dataclass(frozen=True)
class GymConfig:
    """A reasoning-gym mix and the sizes of its three splits."""

    datasets: tuple[GymDataset, ...] = (
        GymDataset("chain_sum", {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2}, prompt="compact"),
    )
    """The data sets of the mix (a mapping with GymDataset's fields is accepted, e.g. from JSON)."""
    seed: int = 0
    """Seed of the draws (the split partition does not depend on it)."""
    train_size: int = 512
    """RL training prompts."""
    eval_size: int = 256
    """Held-out prompts."""
    warmstart_size: int = 4096
    """Supervised warm-start problems (for the embedded tiny model)."""
    split_weights: tuple[float, float, float] = (0.5, 0.2, 0.3)
    """Shares of each data set's prompt texts that belong to the train, held-out and warm-start splits."""
    binary: bool = False
    """Reward 1 only where ``score_answer`` gives 1.0, else 0 (reward ``reasoning_gym_binary``); False keeps
    the data set's own score, which is partial credit for some data sets (e.g. spell_backward)."""

    def __post_init__(self) -> None:
        if not isinstance(self.binary, bool):
            raise ValueError(f"binary must be true or false; got binary={self.binary!r}")
        items = tuple(d if isinstance(d, GymDataset) else _as_dataset(d) for d in self.datasets)
        if not items:
            raise ValueError("datasets must name at least one reasoning-gym data set")
        object.__setattr__(self, "datasets", items)
        keys = [d.key() for d in items]
        if len(set(keys)) != len(keys):
            twice = next(d.name for d, k in zip(items, keys, strict=True) if keys.count(k) > 1)
            raise ValueError(f"datasets must not repeat a data set with the same config; {twice!r} appears twice")
        check_int("seed", self.seed, low=0)
        for key in ("train_size", "eval_size", "warmstart_size"):
            check_int(key, getattr(self, key), low=0)
        if len(self.split_weights) != 3 or sum(self.split_weights) <= 0:
            raise ValueError(f"split_weights must be three weights, not all 0; got {self.split_weights!r}")
        for w in self.split_weights:
            check_real("split_weights", w, low=0.0)

    def size(self, split: Split) -> int:
        """Prompts asked of ``split``."""
        return {"train": self.train_size, "eval": self.eval_size, "warmstart": self.warmstart_size}[split]


def _as_dataset(item: Any) -> GymDataset:
    if not isinstance(item, Mapping):
        raise ValueError(f"datasets entries must be GymDataset or mappings; got {item!r}")
    values = dict(item)
    if isinstance(values.get("level_by"), list):
        values["level_by"] = tuple(values["level_by"])
    return GymDataset(**values)


def _import_gym() -> Any:
    try:
        import reasoning_gym  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ValueError("source='reasoning_gym' needs reasoning-gym: pip install 'knapsack-rl[gym]'") from exc
    return reasoning_gym


def split_counts(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split by largest remainder of ``total * w / sum(w)`` (ties to the earlier data set)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


def _jsonable(value: Any) -> Any:
    """``value`` through JSON (tuples become lists; anything JSON cannot hold becomes its str)."""
    return json.loads(json.dumps(value, default=str))


def _level(spec: GymDataset, entry: Mapping[str, Any]) -> str:
    label = spec.name if spec.difficulty is None else f"{spec.name}/{spec.difficulty}"
    for key in spec.level_by:
        if key not in entry["metadata"]:
            raise ValueError(f"level_by key {key!r} is not in {spec.name}'s metadata {sorted(entry['metadata'])}")
        label += f"/{key}={entry['metadata'][key]}"
    return label


def _seed(spec: GymDataset, split: Split, config: GymConfig) -> int:
    """The generator seed of (data set, split) under ``config``."""
    return int(np.random.SeedSequence([config.seed, SPLITS.index(split), spec.key()]).generate_state(1)[0]) >> 1


def _limit(count: int) -> int:
    """Entries ``draw`` looks through for ``count`` distinct prompts."""
    return 50 * (count + 100)


def _generator(spec: GymDataset, split: Split, config: GymConfig, size: int) -> Any:
    """The reasoning-gym data set that generates ``spec``'s entries of ``split``."""
    try:
        return _import_gym().create_dataset(spec.name, **spec.config, seed=_seed(spec, split, config), size=size)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ValueError(f"reasoning-gym data set {spec.name!r} rejected config {spec.config!r}: {exc}") from exc


def _record(entry: Mapping[str, Any]) -> Extra:
    """The JSON-able (question, answer, metadata) of a generated entry."""
    return dict(_jsonable({"question": entry["question"], "answer": entry["answer"], "metadata": entry["metadata"]}))


def draw(spec: GymDataset, count: int, split: Split, config: GymConfig) -> list[tuple[str, str, str, Extra]]:
    """The first ``count`` distinct (prompt, answer, level, extra) of ``spec`` that belong to ``split``.

    Raises:
        ValueError: naming the data set and split when fewer distinct prompts turn up after
            ``50 * (count + 100)`` entries (a small problem space, or a small split weight).
    """
    limit = _limit(count)
    dataset = _generator(spec, split, config, limit)
    template = TEMPLATES.get(spec.name) if spec.prompt == "compact" else None
    out: list[tuple[str, str, str, Extra]] = []
    seen: set[str] = set()
    for index in range(limit):
        if len(out) == count:
            return out
        entry = dataset[index]
        prompt = template(entry) if template is not None else str(entry["question"])
        if prompt in seen or split_of(prompt, config.split_weights) != split:
            continue
        seen.add(prompt)
        ref = {"dataset": spec.name, "config": _jsonable(spec.config), "split": split, "index": index}
        out.append(
            (prompt, str(entry["answer"]), _level(spec, entry), {"reasoning_gym": {**ref, "entry": _record(entry)}})
        )
    if len(out) < count:
        raise ValueError(
            f"reasoning-gym data set {spec.name!r} gave {len(out)} distinct prompts in the {split} split after "
            f"{limit} entries; {count} were asked for (lower the size, raise the split's weight, or widen the config)"
        )
    return out


def build_gym_split(config: GymConfig, split: Split) -> PromptSet:
    """One split of the mix (see the module docstring); duplicates across data sets keep the first."""
    counts = split_counts(config.size(split), [d.weight for d in config.datasets])
    rows: list[tuple[str, str, str, Extra]] = []
    taken: set[int] = set()
    for spec, count in zip(config.datasets, counts, strict=True):
        for row in draw(spec, count, split, config):
            pid = problem_id(row[0])
            if pid not in taken:
                taken.add(pid)
                rows.append(row)
    return PromptSet(
        ids=np.array([problem_id(r[0]) for r in rows], dtype=np.int64),
        prompts=[r[0] for r in rows],
        answers=[r[1] for r in rows],
        levels=[r[2] for r in rows],
        extras=[r[3] for r in rows],
    )


REFERENCE_KEYS = ("dataset", "config", "split", "index")
"""The keys of a reasoning-gym reference in a file's ``extra_info.extras`` (``{"reasoning_gym": {...}}``)."""

_REGENERATE = "regenerate the file with knapsack_rl.tasks.write_task from the run's task config"


def entry_of(reference: Any, config: GymConfig) -> Extra:
    """The entry (question, answer, metadata) that a file's reasoning-gym ``reference`` names, regenerated
    from ``config``: the reference only selects one of the config's data sets, a split and an index.

    Raises:
        ValueError: one line: the reference embeds an entry (the old layout) or has other keys, names a
            data set / config not in ``config.datasets``, an unknown split, or an index out of range.
    """
    if isinstance(reference, Mapping) and "entry" in reference:
        raise ValueError(f"its reasoning_gym record embeds the entry to score against (the old layout); {_REGENERATE}")
    if not isinstance(reference, Mapping) or set(reference) != set(REFERENCE_KEYS):
        shown = sorted(reference) if isinstance(reference, Mapping) else reference
        raise ValueError(
            f"its reasoning_gym reference must have exactly the keys {list(REFERENCE_KEYS)}; got {shown!r:.120}"
        )
    name, spec_config, split, index = (reference[k] for k in REFERENCE_KEYS)
    spec = next((d for d in config.datasets if d.name == name and _jsonable(d.config) == spec_config), None)
    if spec is None:
        mix = [(d.name, _jsonable(d.config)) for d in config.datasets]
        raise ValueError(
            f"its reference names data set {name!r:.60} with config {spec_config!r:.120}, which is not in the run "
            f"config's reasoning_gym mix {mix!r:.300} (set task.reasoning_gym to the config the file was written from)"
        )
    if split not in SPLITS:
        raise ValueError(f"its reference names split {split!r:.60}; valid: {list(SPLITS)}")
    count = split_counts(config.size(split), [d.weight for d in config.datasets])[config.datasets.index(spec)]
    size = _limit(count)  # the generator size draw() used (some data sets, e.g. acre, depend on it)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
        raise ValueError(
            f"its reference index must be an integer in [0, {size}) for the {split} split; got {index!r:.60}"
        )
    return _entry(spec, split, config, size, index)


def _entry(spec: GymDataset, split: Split, config: GymConfig, size: int, index: int) -> Extra:
    return _cached_entry(json.dumps([spec.name, spec.config, _seed(spec, split, config)], sort_keys=True), size, index)


@functools.lru_cache(maxsize=4096)
def _cached_entry(key: str, size: int, index: int) -> Extra:
    """Entry ``index`` of the generator ``key`` (name, config, seed); callers must not change it."""
    name, spec_config, seed = json.loads(key)
    dataset = _cached_generator(name, json.dumps(spec_config, sort_keys=True), seed, size)
    return _record(dataset[index])


@functools.lru_cache(maxsize=64)
def _cached_generator(name: str, config_json: str, seed: int, size: int) -> Any:
    return _import_gym().create_dataset(name, **json.loads(config_json), seed=seed, size=size)


def resolve_references(prompts: PromptSet, config: GymConfig, where: str) -> PromptSet:
    """``prompts`` (read from file ``where``) with each reasoning-gym reference completed by its entry,
    regenerated from ``config`` (see :func:`entry_of`); the entry's answer must be the row's answer.

    Raises:
        ValueError: naming the file and row of a missing or invalid reference, or of an answer that the
            regenerated entry does not have (the file was written under another config).
    """
    extras: list[Extra] = []
    for j in range(len(prompts)):
        at = f"{where} row {j + 1} (id {int(prompts.ids[j])})"
        extra = prompts.extras[j] if prompts.extras is not None else None
        if not extra or "reasoning_gym" not in extra:
            raise ValueError(
                f"{at}: no reasoning_gym reference in extra_info.extras (a reasoning-gym reward needs one)"
            )
        try:
            entry = entry_of(extra["reasoning_gym"], config)
        except ValueError as exc:
            raise ValueError(f"{at}: {exc}") from None
        if str(entry["answer"]) != prompts.answers[j]:
            raise ValueError(
                f"{at}: reward_model.ground_truth {prompts.answers[j]!r:.80} is not the answer of the entry its "
                f"reference regenerates ({str(entry['answer'])!r:.80}); {_REGENERATE}"
            )
        extras.append({**extra, "reasoning_gym": {**extra["reasoning_gym"], "entry": entry}})
    return PromptSet(prompts.ids, prompts.prompts, prompts.answers, prompts.levels, extras)


def score_entry(response: str, record: Mapping[str, Any]) -> float:
    """The score of ``response.strip()`` for the entry of an in-memory reasoning-gym record (reference and
    entry): by :func:`knapsack_rl.tasks.gym_scoring.score_answer` (admitted data sets only, no text run)."""
    if "entry" not in record:
        raise ValueError(
            "this reasoning_gym record holds a reference but no entry: load files through load_task, which "
            "regenerates the entries from the run's config"
        )
    return score_answer(str(record["dataset"]), record["config"], response.strip(), record["entry"])


@register_reward("reasoning_gym", uses_extras=True)
def gym_reward(responses: Sequence[str], answers: Sequence[str], extras: Sequence[Extra | None]) -> NDArray[np.float64]:
    """Each response's score for its prompt's reasoning-gym entry (``extras[j]["reasoning_gym"]``): the data
    set's own ``score_answer`` or its comparator (:mod:`knapsack_rl.tasks.gym_scoring`)."""
    out = np.zeros(len(responses))
    for j, (response, extra) in enumerate(zip(responses, extras, strict=True)):
        if extra is None or "reasoning_gym" not in extra:
            raise ValueError(f"response {j}: its prompt has no reasoning_gym record in extras")
        out[j] = score_entry(response, extra["reasoning_gym"])
    return out


@register_reward("reasoning_gym_binary", uses_extras=True)
def gym_binary_reward(
    responses: Sequence[str], answers: Sequence[str], extras: Sequence[Extra | None]
) -> NDArray[np.float64]:
    """1.0 where the data set's own ``score_answer`` is 1.0, else 0.0 (binary rewards for the tracker)."""
    scores: NDArray[np.float64] = gym_reward(responses, answers, extras)
    return np.asarray(scores == 1.0, dtype=np.float64)


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
    reasoning_gym: Mapping[str, Any] | None = None,
    **_: Any,
) -> float:
    """verl's ``custom_reward_function``: score a row written by :func:`knapsack_rl.tasks.verl_data.write_verl`.

    The answer is the text inside the last ``<answer>...</answer>`` when the response has one, else the
    whole response (stripped). A row with a reasoning-gym reference is scored against the entry that
    the reference names, regenerated from ``reasoning_gym`` (the run's :class:`GymConfig` fields, given
    in verl's config as ``reward.custom_reward_function.reward_kwargs.reasoning_gym``); rows without a
    reference fall back to exact match against ``ground_truth``. verl runs its reward functions in its
    own workers: no timeout is applied here (answers still never run as code).

    Raises:
        ValueError: one line: a reference without ``reasoning_gym``, an invalid reference (see
            :func:`entry_of`), or a ground truth the regenerated entry does not have.
    """
    import re

    tagged = re.findall(r"<answer>\s?(.*?)\s?</answer>", solution_str, flags=re.DOTALL)
    answer = tagged[-1] if tagged else solution_str
    extras = json.loads(text) if isinstance(text := (extra_info or {}).get("extras"), str) else {}
    if not isinstance(extras, dict):
        raise ValueError(f"extra_info.extras must be the JSON text of an object; got {text!r:.80}")
    record = extras.get("reasoning_gym")
    if record is None:
        return float(answer.strip() == str(ground_truth).strip())
    if reasoning_gym is None:
        raise ValueError(
            "this row holds a reasoning_gym reference: pass the run's task.reasoning_gym config as "
            "reward.custom_reward_function.reward_kwargs.reasoning_gym"
        )
    config = _gym_config(json.dumps(_plain(reasoning_gym), sort_keys=True))
    try:
        entry = entry_of(record, config)
    except ValueError as exc:
        raise ValueError(f"row with extra_info.index={(extra_info or {}).get('index')!r}: {exc}") from None
    if str(entry["answer"]) != str(ground_truth):
        raise ValueError(
            f"ground_truth {str(ground_truth)!r:.80} is not the answer of the entry the reference regenerates "
            f"({str(entry['answer'])!r:.80}); {_REGENERATE}"
        )
    return score_entry(answer, {**record, "entry": entry})


def _plain(value: Any) -> Any:
    """``value`` with every mapping a dict and every non-string sequence a list (e.g. from OmegaConf)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


@functools.lru_cache(maxsize=16)
def _gym_config(config_json: str) -> GymConfig:
    values = json.loads(config_json)
    if not isinstance(values, dict):
        raise ValueError(f"reasoning_gym must be a mapping of GymConfig fields; got {values!r:.80}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return GymConfig(**values)
    except TypeError as exc:  # an unknown key
        raise ValueError(f"reasoning_gym: {exc}") from None


__all__ = [
    "TEMPLATES",
    "GymConfig",
    "GymDataset",
    "build_gym_split",
    "compute_score",
    "draw",
    "entry_of",
    "gym_binary_reward",
    "gym_reward",
    "resolve_references",
    "score_entry",
    "split_counts",
]
