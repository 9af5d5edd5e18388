"""`knapsack-rl allocate`: stats files in, budgets out, clear errors on malformed files."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from knapsack_rl import allocate
from knapsack_rl.cli import main
from knapsack_rl.statsfile import read_stats


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_to_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": i, "p_hat": p} for i, p in enumerate([0.0, 0.25, 0.5, 1.0, None, 0.75])]
    stats = _write_jsonl(tmp_path / "s.jsonl", rows)
    out = tmp_path / "b.json"
    assert main(["allocate", str(stats), "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    expected = allocate(np.array([0.0, 0.25, 0.5, 1.0, np.nan, 0.75])).budgets
    assert [r["budget"] for r in got] == expected.tolist()
    assert [r["id"] for r in got] == list(range(6))
    text = capsys.readouterr().out
    assert "prompts 6  total 48" in text and "buckets  unestimated 1  effective 3  negative 1  positive 1" in text
    assert "budget histogram:" in text


def test_csv_with_successes_and_counts_to_csv(tmp_path: Path) -> None:
    stats = tmp_path / "s.csv"
    stats.write_text("id,successes,count\na,3,8\nb,0,8\nc,8,8\nd,1,2\n")
    out = tmp_path / "b.csv"
    assert main(["allocate", str(stats), "--out", str(out), "--min-count", "8"]) == 0
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows[0] == ["id", "p_hat", "budget", "bucket"]
    assert rows[4][:2] == ["d", ""] and rows[4][3] == "unestimated"  # count 2 < 8: no estimate
    assert sum(int(row[2]) for row in rows[1:]) == 32


def test_parquet(tmp_path: Path) -> None:
    stats = tmp_path / "s.parquet"
    pq.write_table(pa.table({"id": [5, 6, 7], "p_hat": [0.2, 0.9, None]}), stats)
    ids, p = read_stats(stats)
    assert ids == [5, 6, 7] and p[0] == 0.2 and np.isnan(p[2])


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (
            '{"id": 1, "p_hat": 0.5}\n{"id": 1, "p_hat": 0.2}\n',
            ".jsonl",
            r"s.jsonl:2: duplicate id 1 \(first on line 1\)",
        ),
        ('{"id": 1, "p_hat": 0.5}\nnot json\n', ".jsonl", r"s.jsonl:2: malformed JSON"),
        ('{"id": 1, "p_hat": 1.5}\n', ".jsonl", r"s.jsonl:1: p_hat must be in \[0, 1\] or empty; got p_hat=1.5"),
        ('{"p_hat": 0.5}\n', ".jsonl", r"s.jsonl:1: missing 'id'"),
        ('{"id": 1}\n', ".jsonl", r"s.jsonl:1: row needs 'p_hat', or 'successes' and 'count'"),
        ("id,successes,count\na,9,8\n", ".csv", r"s.csv:2: successes must be in \[0, count\]; got successes='9'"),
        ("id,p_hat\na,x\n", ".csv", r"s.csv:2: p_hat must be a number; got p_hat='x'"),
        ("name,p_hat\na,0.5\n", ".csv", r"s.csv:1: CSV header must contain 'id'"),
        ("", ".jsonl", r"has no rows"),
        ("x", ".txt", r"unknown format '.txt'"),
    ],
)
def test_malformed_stats_name_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, suffix: str, message: str
) -> None:
    stats = tmp_path / f"s{suffix}"
    stats.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_stats(stats)
    assert main(["allocate", str(stats)]) == 2
    assert "error:" in capsys.readouterr().err


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("knapsack-rl: error: "), err  # one line, no traceback
    return err.removeprefix("knapsack-rl: error: ").rstrip("\n")


def test_a_negative_min_count_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stats = _write_jsonl(tmp_path / "s.jsonl", [{"id": 1, "successes": 1, "count": 2}])
    assert main(["allocate", str(stats), "--min-count", "-1"]) == 2
    assert _one_error_line(capsys) == "--min-count must be >= 0; got --min-count=-1"
    assert main(["allocate", str(stats), "--min-count", "0"]) == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "s.csv").mkdir() or d / "s.csv", r"stats file .*s.csv is a folder"),
        (
            lambda d: _write_jsonl(d / "s.jsonl", [{"id": 2**64, "p_hat": 0.5}]),
            r".*s.jsonl:1: id 18446744073709551616 does not fit in 64 bits",
        ),
        (
            lambda d: (d / "s.csv").write_text("id,p_hat\n" + "x" * 200_000 + ",0.5\n") and d / "s.csv",
            r".*s.csv:2: malformed CSV \(field larger than field limit \(131072\)\)",
        ),
        (lambda d: os.mkfifo(d / "s.jsonl") or d / "s.jsonl", r"stats file .*s.jsonl is not a regular file"),
    ],
    ids=["folder", "id-over-int64", "cell-over-field-limit", "fifo"],
)
def test_hostile_stats_files_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, message: str
) -> None:
    stats = make(tmp_path)  # type: ignore[operator]
    assert main(["allocate", str(stats), "--out", str(tmp_path / "b.csv")]) == 2
    assert re.match(message, _one_error_line(capsys))
    assert not (tmp_path / "b.csv").exists()


def test_a_full_disk_is_a_one_line_error_naming_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stats = _write_jsonl(tmp_path / "s.jsonl", [{"id": 1, "p_hat": 0.5}])

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert main(["allocate", str(stats), "--out", str(tmp_path / "b.json")]) == 2
    assert _one_error_line(capsys) == f"cannot write {tmp_path / 'b.json'}: No space left on device"


def test_an_out_in_a_missing_folder_is_refused_and_no_folder_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stats = _write_jsonl(tmp_path / "s.jsonl", [{"id": 1, "p_hat": 0.5}])
    out = tmp_path / "missing" / "dir" / "o.json"
    assert main(["allocate", str(stats), "--out", str(out)]) == 2
    assert _one_error_line(capsys) == f"--out {out}: {out.parent} is not an existing folder; create it first"
    assert not (tmp_path / "missing").exists()  # no surprise folders
    (tmp_path / "f").write_text("")
    assert main(["allocate", str(stats), "--out", str(tmp_path / "f" / "o.json")]) == 2
    assert "f is not an existing folder" in _one_error_line(capsys)
    out.parent.mkdir(parents=True)
    assert main(["allocate", str(stats), "--out", str(out)]) == 0
    assert json.loads(out.read_text())[0]["id"] == 1
