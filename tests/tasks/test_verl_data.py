import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from knapsack_rl.tasks import load_verl_dataset


def _row(index, prompt="1+1=", answer="2", **extra):
    return {"prompt": prompt, "reward_model": {"ground_truth": answer}, "extra_info": {"index": index, **extra}}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_with_chat_prompts_and_levels(tmp_path):
    rows = [
        _row(7, prompt=[{"role": "user", "content": "2+2="}], answer="4", difficulty="easy"),
        _row(3, prompt="9*9=", answer="81"),
    ]
    ps = load_verl_dataset(_write_jsonl(tmp_path / "d.jsonl", rows))
    assert ps.ids.tolist() == [7, 3]
    assert ps.prompts == ["2+2=", "9*9="]
    assert ps.answers == ["4", "81"]
    assert ps.levels == ["easy", "all"]
    formatted = load_verl_dataset(tmp_path / "d.jsonl", chat_format=lambda msgs: "<u>" + msgs[0]["content"])
    assert formatted.prompts[0] == "<u>2+2="


def test_parquet(tmp_path):
    rows = [_row(1, answer="2"), _row(2, prompt="3+3=", answer="6")]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    ps = load_verl_dataset(tmp_path / "d.parquet")
    assert ps.ids.tolist() == [1, 2] and ps.answers == ["2", "6"]


def test_missing_and_duplicate_index_are_loud(tmp_path):
    bad = _row(1)
    del bad["extra_info"]["index"]
    with pytest.raises(ValueError, match=r"row 2: missing extra_info.index"):
        load_verl_dataset(_write_jsonl(tmp_path / "a.jsonl", [_row(0), bad]))
    with pytest.raises(ValueError, match=r"row 3: duplicate extra_info.index=5 \(first seen in row 1\)"):
        load_verl_dataset(_write_jsonl(tmp_path / "b.jsonl", [_row(5), _row(6), _row(5)]))
    no_answer = {"prompt": "x", "extra_info": {"index": 1}}
    with pytest.raises(ValueError, match=r"missing reward_model\.ground_truth"):
        load_verl_dataset(_write_jsonl(tmp_path / "c.jsonl", [no_answer]))
    with pytest.raises(ValueError, match=r"must end in \.jsonl or \.parquet"):
        load_verl_dataset(_write_jsonl(tmp_path / "c.csv", [_row(1)]))


@pytest.mark.parametrize("bad", [[1, 2], None, 3, "text"])
def test_a_row_that_is_not_an_object_is_one_line_naming_file_and_row(tmp_path, bad):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(_row(1)) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=rf"d\.jsonl row 2: a row must be a JSON object; got {type(bad).__name__}"):
        load_verl_dataset(path)


def test_a_fifo_or_folder_named_like_a_data_file_is_refused_without_hanging(tmp_path):
    import os
    import threading

    fifo = tmp_path / "d.jsonl"
    os.mkfifo(fifo)

    def writer():  # a writer that closes at once: a plain read would see an empty file
        with open(fifo, "w"):
            pass

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        with pytest.raises(ValueError, match=r"data file .*d\.jsonl is not a regular file"):
            load_verl_dataset(fifo)
    finally:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # releases the writer if it still waits
        thread.join(5)
        os.close(fd)
    (tmp_path / "dir.parquet").mkdir()
    with pytest.raises(ValueError, match=r"data file .*dir\.parquet is a folder"):
        load_verl_dataset(tmp_path / "dir.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"data file .*bad\.parquet is not a readable parquet file"):
        load_verl_dataset(tmp_path / "bad.parquet")
    (tmp_path / "bad.jsonl").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"data file .*bad\.jsonl is not UTF-8 text"):
        load_verl_dataset(tmp_path / "bad.jsonl")
