"""add_prompt_ids: stable content ids for HF datasets, lists of dicts and pandas DataFrames."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pandas as pd
import pytest
from datasets import Dataset

from knapsack_rl.integrations import prompt_ids as pid_mod
from knapsack_rl.integrations.prompt_ids import add_prompt_ids, prompt_id

CHAT = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2=?"}],
    [{"role": "user", "content": "3*3=?"}],
]


def test_id_is_the_documented_hash_of_the_prompt_content() -> None:
    assert prompt_id("1+1=") == hashlib.sha256(b'"1+1="').hexdigest()[:16]
    text = '[{"content":"3*3=?","role":"user"}]'  # sorted keys, no spaces
    assert prompt_id(CHAT[1]) == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert prompt_id([{"content": "3*3=?", "role": "user"}]) == prompt_id(CHAT[1])  # key order does not matter
    assert prompt_id("é") == hashlib.sha256('"é"'.encode()).hexdigest()[:16]  # UTF-8, not ASCII escapes


def test_every_container_gets_the_same_ids_and_is_not_modified() -> None:
    rows = [{"prompt": p, "answer": str(i)} for i, p in enumerate(CHAT)]
    out_rows = add_prompt_ids(rows)
    assert [r["prompt_id"] for r in out_rows] == [prompt_id(p) for p in CHAT]
    assert "prompt_id" not in rows[0]  # a copy: the caller's rows are unchanged
    ds = Dataset.from_list(rows)
    out_ds = add_prompt_ids(ds, id_column="uid")
    assert out_ds["uid"] == [r["prompt_id"] for r in out_rows] and "uid" not in ds.column_names
    frame = ds.to_pandas()  # conversational prompts become NumPy arrays of dicts here
    out_frame = add_prompt_ids(frame)
    assert list(out_frame["prompt_id"]) == [r["prompt_id"] for r in out_rows] and "prompt_id" not in frame.columns


def test_existing_equal_ids_are_accepted_and_differing_ones_refused() -> None:
    rows = add_prompt_ids([{"prompt": "a"}, {"prompt": "b"}])
    assert add_prompt_ids(rows) is rows  # idempotent
    frame = pd.DataFrame({"prompt": ["a", "b"], "prompt_id": [0, 1]})
    with pytest.raises(ValueError, match=r"^prompt_id\[0\]=0 differs from the content id '[0-9a-f]{16}'"):
        add_prompt_ids(frame)
    with pytest.raises(ValueError, match=r"data\[1\] has no 'prompt_id' key while other rows have one"):
        add_prompt_ids([{"prompt": "a", "prompt_id": "x"}, {"prompt": "b"}])


def test_duplicates_and_collisions_raise_naming_both_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"^prompt\[0\] and prompt\[2\] are the same prompt; deduplicate"):
        add_prompt_ids([{"prompt": "a"}, {"prompt": "b"}, {"prompt": "a"}])
    monkeypatch.setattr(pid_mod, "ID_HEX_DIGITS", 1)  # 16 possible ids: 17 distinct prompts must collide
    with pytest.raises(ValueError, match=r"^prompt\[\d+\] and prompt\[\d+\] differ but share content id '[0-9a-f]'$"):
        add_prompt_ids([{"prompt": str(i)} for i in range(17)])


def test_bad_inputs_raise_naming_the_row_or_type() -> None:
    with pytest.raises(ValueError, match=r"^prompt\[1\]: prompt is not JSON data \(object\)"):
        add_prompt_ids([{"prompt": "a"}, {"prompt": object()}])
    with pytest.raises(ValueError, match=r"data has no column 'prompt' \(columns: \['text'\]\)"):
        add_prompt_ids(Dataset.from_dict({"text": ["a"]}))
    with pytest.raises(ValueError, match=r"data\[0\] has no 'prompt' key"):
        add_prompt_ids([{"text": "a"}])
    with pytest.raises(ValueError, match=r"a list of dict rows or a pandas.DataFrame; got tuple"):
        add_prompt_ids(({"prompt": "a"},))


def test_module_imports_neither_datasets_nor_pandas() -> None:
    code = "import sys, knapsack_rl.integrations.prompt_ids; print('datasets' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
