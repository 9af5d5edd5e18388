"""Loading a JSONL or parquet data set in verl's layout into a :class:`PromptSet`.

Each row needs ``prompt`` (a string, or a chat list of ``{"role", "content"}`` messages),
``reward_model.ground_truth`` (the reference answer) and ``extra_info.index`` (the stable prompt id,
an integer, unique). A difficulty label is read from ``extra_info.difficulty`` or ``extra_info.level``
when present, else ``data_source``, else ``"all"``. ``extra_info.extras``, when present, is a JSON
object text: the prompt's extras record (what its scorer needs). A reasoning-gym prompt's record is a
reference ``{"reasoning_gym": {"dataset", "config", "split", "index"}}``: the entry it names is
regenerated from the run's config (:func:`knapsack_rl.tasks.gym.resolve_references`), never read from
the file; a file whose record embeds the entry (``"entry"``, the old layout) is refused.

:func:`write_verl` writes a :class:`PromptSet` in this layout (atomically) so that
``load_verl_dataset(write_verl(ps, path)) == ps``, except that reasoning-gym records lose their entry
(they keep the reference).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from knapsack_rl.io import atomic_write_bytes, read_file_bytes
from knapsack_rl.tasks.base import Extra, PromptSet

ChatFormatter = Callable[[list[dict[str, str]]], str]


def _read_rows(path: Path) -> list[Any]:
    """The rows of a ``.jsonl`` / ``.parquet`` file, read through :func:`knapsack_rl.io.read_file_bytes`."""
    if path.suffix not in (".jsonl", ".parquet"):
        raise ValueError(f"data file must end in .jsonl or .parquet; got {path}")
    data = read_file_bytes(path, what="data file")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(pq.read_table(pa.BufferReader(data)).to_pylist())
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"data file {path} is not a readable parquet file ({str(exc).splitlines()[0]})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"data file {path} is not UTF-8 text (byte {exc.start})") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise ValueError(f"{path}:{lineno}: not valid JSON (nested too deeply)") from None
    return rows


def _prompt_text(prompt: Any, where: str, chat_format: ChatFormatter | None) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt):
        if chat_format is not None:
            return chat_format(prompt)
        return "\n".join(str(m["content"]) for m in prompt)
    raise ValueError(f"{where}: prompt must be a string or a list of chat messages; got {prompt!r:.80}")


def load_verl_dataset(path: str | Path, *, chat_format: ChatFormatter | None = None) -> PromptSet:
    """Read a verl-layout JSONL / parquet file.

    Args:
        path: ``.jsonl`` or ``.parquet`` file.
        chat_format: turns a chat list into the model's prompt text (e.g. a tokenizer's chat template);
            default joins the message contents with newlines.

    Raises:
        ValueError: naming the file and row (1-based) of a missing field, or the duplicated index.
    """
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"data file {path} has no rows")
    ids, prompts, answers, levels, extras = [], [], [], [], []
    first_row: dict[int, int] = {}
    for i, row in enumerate(rows, start=1):
        where = f"{path} row {i}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: a row must be a JSON object; got {type(row).__name__} {row!r:.60}")
        extra = row.get("extra_info") or {}
        if not isinstance(extra, dict) or extra.get("index") is None:
            raise ValueError(f"{where}: missing extra_info.index (a unique integer id per prompt is required)")
        index = extra["index"]
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise ValueError(f"{where}: extra_info.index must be an integer; got {index!r}")
        if int(index) in first_row:
            raise ValueError(f"{where}: duplicate extra_info.index={index} (first seen in row {first_row[int(index)]})")
        first_row[int(index)] = i
        reward_model = row.get("reward_model") or {}
        if not isinstance(reward_model, dict) or reward_model.get("ground_truth") is None:
            raise ValueError(f"{where}: missing reward_model.ground_truth")
        if "prompt" not in row:
            raise ValueError(f"{where}: missing prompt")
        ids.append(int(index))
        prompts.append(_prompt_text(row["prompt"], where, chat_format))
        answers.append(str(reward_model["ground_truth"]))
        levels.append(str(extra.get("difficulty", extra.get("level", row.get("data_source", "all")))))
        extras.append(_extras(extra.get("extras"), where))
    has_extras = any(e is not None for e in extras)
    return PromptSet(
        ids=np.array(ids, dtype=np.int64),
        prompts=prompts,
        answers=answers,
        levels=levels,
        extras=[e or {} for e in extras] if has_extras else None,
    )


def _extras(text: Any, where: str) -> Extra | None:
    if text is None:
        return None
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: extra_info.extras is not valid JSON ({exc.msg})") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{where}: extra_info.extras must be the JSON text of an object; got {text!r:.80}")
    gym = value.get("reasoning_gym")
    if isinstance(gym, dict) and "entry" in gym:
        raise ValueError(
            f"{where}: extra_info.extras embeds the reasoning-gym entry to score against (the old layout, which "
            "let a file choose what is scored); regenerate the file with knapsack_rl.tasks.write_task from the "
            "run's task config"
        )
    return value


def _file_extras(extra: Extra) -> Extra:
    """``extra`` as written to a file: a reasoning-gym record keeps its reference, not its entry."""
    gym = extra.get("reasoning_gym")
    if not isinstance(gym, dict) or "entry" not in gym:
        return extra
    return {**extra, "reasoning_gym": {k: v for k, v in gym.items() if k != "entry"}}


def write_verl(prompts: PromptSet, path: str | Path, *, data_source: str = "knapsack_rl", chat: bool = True) -> Path:
    """Write ``prompts`` as verl-layout rows to a ``.jsonl`` or ``.parquet`` file, atomically.

    Row j: ``data_source``; ``prompt`` (``[{"role": "user", "content": text}]`` when ``chat``, else the
    text); ``reward_model = {"style": "rule", "ground_truth": answer}``; ``extra_info = {"index": id,
    "level": level, "extras": JSON text of the extras record}`` (``extras`` only when the set has them;
    a reasoning-gym record is written as its reference, without the entry). Use
    :func:`knapsack_rl.tasks.gym.compute_score` as verl's reward function for reasoning-gym rows.
    """
    path = Path(path)
    if path.suffix not in (".jsonl", ".parquet"):
        raise ValueError(f"path must end in .jsonl or .parquet; got {path}")
    rows = []
    for j in range(len(prompts)):
        info: dict[str, Any] = {"index": int(prompts.ids[j]), "level": prompts.levels[j]}
        if prompts.extras is not None:
            info["extras"] = json.dumps(_file_extras(prompts.extras[j]), sort_keys=True)
        text = prompts.prompts[j]
        rows.append(
            {
                "data_source": data_source,
                "prompt": [{"role": "user", "content": text}] if chat else text,
                "reward_model": {"style": "rule", "ground_truth": prompts.answers[j]},
                "extra_info": info,
            }
        )
    if path.suffix == ".jsonl":
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buf)
        data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path
