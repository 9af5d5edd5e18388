"""De-duplicate DAPO-Math-17K into verl's parquet layout with one stable integer id per prompt.

The public release (BytedTsinghua-SIA/DAPO-Math-17k) repeats about 17k prompts about 100 times, each
copy with its own ``extra_info.index``; Knapsack RL keys its per-prompt success rates by that id, so
the copies must be merged first. This script keeps the first row of every distinct prompt and writes

    data_source, prompt (chat messages), ability, reward_model {style, ground_truth},
    extra_info {index: 0..K-1, split, source_index}

which is what verl's ``RLHFDataset`` reads and what the adapter reads its ids from. Download the
release yourself (no network access here), then::

    python examples/verl/prepare_dapo_math.py --input dapo-math-17k.parquet --output ~/data/dapo17k_dedup/train.parquet
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger("prepare_dapo_math")
REQUIRED = ("data_source", "prompt", "reward_model")


def prompt_key(prompt: Any) -> str:
    """Canonical text of a prompt (chat messages or a string) used to detect duplicates."""
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    if isinstance(prompt, list):
        prompt = [{str(k): str(v) for k, v in dict(m).items()} for m in prompt]
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def deduplicate(frame: pd.DataFrame, split: str = "train") -> pd.DataFrame:
    """Keep the first row of every distinct prompt; ``extra_info.index`` becomes 0..K-1 in that order.

    The ground truth of the kept row is used; a prompt whose copies disagree on it is logged.
    """
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"input lacks column(s) {missing}; columns: {list(frame.columns)}")
    keys = frame["prompt"].map(prompt_key)
    truths = frame["reward_model"].map(lambda r: str(dict(r).get("ground_truth")))
    conflicts = int((pd.DataFrame({"k": keys, "t": truths}).groupby("k")["t"].nunique() > 1).sum())
    if conflicts:
        logger.warning("%d prompts have copies with different ground truths; the first copy is kept", conflicts)
    first = ~keys.duplicated(keep="first")
    out = frame.loc[first].reset_index(drop=True).copy()
    source = [dict(e).get("index") if isinstance(e, dict) else None for e in out.get("extra_info", [None] * len(out))]
    out["extra_info"] = [
        {"index": i, "split": split, "source_index": None if s is None else str(s)} for i, s in enumerate(source)
    ]
    if "ability" not in out.columns:
        out["ability"] = "MATH"
    return out


def read_any(path: Path) -> pd.DataFrame:
    """A parquet, JSON-lines or JSON file as a DataFrame."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".jsonl", ".json"):
        return pd.read_json(path, lines=path.suffix == ".jsonl")
    raise ValueError(f"--input must be .parquet, .jsonl or .json; got {path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, nargs="+", required=True, help="DAPO-Math-17K file(s)")
    parser.add_argument("--output", type=Path, required=True, help="output parquet path")
    parser.add_argument("--split", default="train", help="value of extra_info.split")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    frame = pd.concat([read_any(p) for p in args.input], ignore_index=True)
    out = deduplicate(frame, split=args.split)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(args.output, index=False)
    print(f"{len(frame)} rows -> {len(out)} distinct prompts -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
