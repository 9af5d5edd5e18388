"""Stats files in (ids keep the type the file gives them), budgets out (quoted CSV, no formulas)."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from knapsack_rl.core.allocate import BUCKET_NAMES
from knapsack_rl.statsfile import check_output_path, read_stats, write_budgets


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------- reading
def test_csv_ids_are_strings_exactly_as_written(tmp_path: Path) -> None:
    stats = _file(tmp_path, "s.csv", "id,p_hat\n007,0.5\n00123,0.25\n١٢,0.5\n12,0.1\n²,0.3\n-5,\n a ,1\n")
    ids, p = read_stats(stats)
    assert ids == ["007", "00123", "١٢", "12", "²", "-5", " a "]  # no int(), no strip(): "١٢" is not 12
    assert all(type(i) is str for i in ids)
    assert p[:5].tolist() == [0.5, 0.25, 0.5, 0.1, 0.3] and np.isnan(p[5])


def test_jsonl_ids_keep_their_json_type(tmp_path: Path) -> None:
    rows = [{"id": 7, "p_hat": 0.5}, {"id": "7", "p_hat": 0.5}, {"id": "007", "p_hat": None}, {"id": -2, "p_hat": 0}]
    stats = _file(tmp_path, "s.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    ids, _ = read_stats(stats)
    assert ids == [7, "7", "007", -2] and [type(i) for i in ids] == [int, str, str, int]


def test_parquet_ids_keep_their_column_type(tmp_path: Path) -> None:
    ints, strs = tmp_path / "i.parquet", tmp_path / "s.parquet"
    pq.write_table(pa.table({"id": [5, 6], "p_hat": [0.2, None]}), ints)
    pq.write_table(pa.table({"id": ["005", "6"], "p_hat": [0.2, 0.4]}), strs)
    assert read_stats(ints)[0] == [5, 6]
    assert read_stats(strs)[0] == ["005", "6"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "s.jsonl",
            '{"id": 1, "p_hat": 0.5}\n{"id": 7.0, "p_hat": 0.5}\n',
            r"s.jsonl:2: id must be an integer or a string; got 7.0 \(float\)",
        ),
        ("s.jsonl", '{"id": true, "p_hat": 0.5}\n', r"s.jsonl:1: id must be an integer or a string; got True \(bool\)"),
        ("s.jsonl", '{"id": [1], "p_hat": 0.5}\n', r"s.jsonl:1: id must be an integer or a string; got \[1\] \(list\)"),
        ("s.jsonl", '{"id": "a", "p_hat": true}\n', r"s.jsonl:1: p_hat must be a number; got p_hat=True"),
        ("s.csv", "id,p_hat\n²,x\n", r"s.csv:2: p_hat must be a number; got p_hat='x'"),
        ("s.csv", "id,p_hat\n,0.5\n", r"s.csv:2: missing 'id'"),
        ("s.csv", "id,successes,count\na,3,8\nb,3\n", r"s.csv:3: row has 2 fields, fewer than the header's 3"),
        ("s.csv", "id,p_hat\na,0.5\nb\n", r"s.csv:3: row has 1 fields, fewer than the header's 2"),  # not "no estimate"
        ("s.csv", "id,p_hat\na,0.5,9\n", r"s.csv:2: row has 3 fields, more than the header's 2"),
        ("s.csv", 'id,p_hat\n"a\nb",0.5\nc,x\n', r"s.csv:4: p_hat must be a number; got p_hat='x'"),
        ("s.csv", "id,p_hat,id\na,0.5,b\n", r"s.csv:1: CSV header repeats \['id'\]"),
        ("s.csv", "id,p_hat\na,0.5\na,0.2\n", r"s.csv:3: duplicate id 'a' \(first on line 2\)"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_stats(_file(tmp_path, name, content))


def test_float_id_column_in_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"id": [1.0, 2.0], "p_hat": [0.2, 0.4]}), path)
    with pytest.raises(ValueError, match=r"f.parquet:1: id must be an integer or a string; got 1.0 \(float\)"):
        read_stats(path)


def test_csv_quoting_byte_order_mark_and_blank_lines(tmp_path: Path) -> None:
    stats = tmp_path / "s.csv"
    stats.write_bytes('\ufeffid,p_hat\n"a,b",0.5\n\n"say ""hi""\nthere",0.25\n'.encode())
    ids, p = read_stats(stats)
    assert ids == ["a,b", 'say "hi"\nthere'] and p.tolist() == [0.5, 0.25]


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    for name in ("s.csv", "s.jsonl"):
        path = tmp_path / name
        head = b"id,p_hat\na,0.5\n" if name == "s.csv" else b'{"id": "a", "p_hat": 0.5}\n'
        path.write_bytes(head + b"\xff\xfe,0.5\n")
        with pytest.raises(ValueError, match=rf"{name}:{2 if name == 's.jsonl' else 3}: not valid UTF-8"):
            read_stats(path)


# ------------------------------------------------------------------------------------- writing
IDS: list[int | str] = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\tx", "a,b", 'q"uote', "line\nbreak", -5, 7]


def _budget_columns(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.linspace(0.0, 1.0, n)
    p[1] = np.nan
    return p, np.arange(n) + 2, np.arange(n) % len(BUCKET_NAMES)


def test_csv_budgets_are_quoted_and_formulas_neutralised(tmp_path: Path) -> None:
    out = tmp_path / "b.csv"
    p, budgets, buckets = _budget_columns(len(IDS))
    write_budgets(out, IDS, p, budgets, buckets)
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert rows[0] == ["id", "p_hat", "budget", "bucket"]
    assert [r[0] for r in rows[1:]] == [
        "'=HYPERLINK(\"http://x\")", "'+1", "'-2", "'@SUM(A1)", "\\tx", "a,b", 'q"uote', "line\\nbreak", "-5", "7",
    ]  # fmt: skip
    assert all(len(r) == 4 for r in rows)  # commas, quotes and newlines did not shift columns
    assert rows[2][1] == "" and rows[1][1] == "0.0" and rows[-1][1] == "1.0"
    assert [int(r[2]) for r in rows[1:]] == budgets.tolist()
    assert [r[3] for r in rows[1:]] == [BUCKET_NAMES[k] for k in buckets]
    text = out.read_text(encoding="utf-8")
    assert text.startswith('"id","p_hat","budget","bucket"\n"\'=HYPERLINK(""http://x"")","0.0","2",')


# Ids an attacker controls: a bare CR that splits a row for some readers, formulas behind whitespace,
# control and invisible characters, line and paragraph separators, a NUL, a DEL, C1 controls.
ATTACKS: list[tuple[str, str]] = [
    ("a\rb", "a\\rb"),
    ("x\r=2+2", "x\\r=2+2"),
    ("\r=2+2", "'\\r=2+2"),
    ("=2+2", "'=2+2"),
    (" =2+2", "' =2+2"),
    ("\u3000\u00a0 +cmd|' /C calc'!A0", "'\u3000\u00a0 +cmd|' /C calc'!A0"),
    ("\t=1", "'\\t=1"),
    ("\n@SUM(A1)", "'\\n@SUM(A1)"),
    ("\u200b=1", "'\u200b=1"),
    ("\u2028-1", "'\\u2028-1"),
    ("a\u2029b\x85c", "a\\u2029b\\x85c"),
    ("\x00\x01\x7f", "\\x00\\x01\\x7f"),
    ("back\\slash", "back\\\\slash"),
    ("a\\rb", "a\\\\rb"),  # a literal backslash-r stays distinct from an escaped CR
    ("plain id", "plain id"),
    ("\u05e9\u05dc\u05d5\u05dd\u200cx", "\u05e9\u05dc\u05d5\u05dd\u200cx"),  # format characters inside are kept
]


def test_csv_attack_ids_stay_one_row_each_and_never_start_a_formula(tmp_path: Path) -> None:
    out = tmp_path / "b.csv"
    ids = [a for a, _ in ATTACKS]
    p, budgets, buckets = _budget_columns(len(ids))
    write_budgets(out, ids, p, budgets, buckets)
    text = out.read_text(encoding="utf-8")
    lines = text.splitlines()  # splits at \r, \n, \x85, U+2028, U+2029 ... as the laxest reader would
    assert len(lines) == len(ids) + 1
    assert all(line.startswith('"') and line.endswith('"') for line in lines)  # every cell quoted
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert [r[0] for r in rows[1:]] == [cell for _, cell in ATTACKS]
    for (pid, _), row in zip(ATTACKS, rows[1:], strict=True):
        shown = row[0].lstrip("".join(c for c in row[0] if c.isspace() or c in "\u200b"))
        assert not shown.startswith(("=", "+", "-", "@")), (pid, row[0])
    assert len({r[0] for r in rows[1:]}) == len(ids)  # escaping kept distinct ids distinct


# ------------------------------------------------------------------------------------- hostile files
def test_a_csv_cell_over_the_field_size_limit_is_a_one_line_error(tmp_path: Path) -> None:
    stats = _file(tmp_path, "s.csv", "id,p_hat\na,0.5\n" + "b" * (csv.field_size_limit() + 1) + ",0.5\n")
    with pytest.raises(ValueError, match=r"^.*s.csv:3: malformed CSV \(field larger than field limit \(131072\)\)$"):
        read_stats(stats)


@pytest.mark.parametrize("name", ["s.csv", "s.jsonl", "s.parquet"])
def test_a_stats_path_that_is_a_folder_is_refused(tmp_path: Path, name: str) -> None:
    folder = tmp_path / name
    folder.mkdir()
    if name == "s.parquet":  # pyarrow would read a folder of parquet files as one data set
        pq.write_table(pa.table({"id": [1], "p_hat": [0.5]}), folder / "part-0.parquet")
    with pytest.raises(ValueError, match=rf"^stats file .*{name} is a folder$"):
        read_stats(folder)


@pytest.mark.parametrize(
    ("name", "write", "message"),
    [
        ("s.jsonl", lambda p: p.write_text('{"id": 1, "p_hat": 0.5}\n{"id": 9223372036854775808, "p_hat": 0.5}\n'),
         r"s.jsonl:2: id 9223372036854775808 does not fit in 64 bits"),
        ("s.jsonl", lambda p: p.write_text('{"id": -9223372036854775809, "p_hat": 0.5}\n'),
         r"s.jsonl:1: id -9223372036854775809 does not fit in 64 bits"),
        ("s.parquet", lambda p: pq.write_table(pa.table({"id": pa.array([1, 2**63 + 5], pa.uint64()),
                                                          "p_hat": [0.5, 0.5]}), p),
         r"s.parquet:2: id 9223372036854775813 does not fit in 64 bits"),
    ],
)  # fmt: skip
def test_integer_ids_outside_int64_are_refused_naming_the_line(tmp_path: Path, name: str, write, message: str) -> None:
    path = tmp_path / name
    write(path)
    with pytest.raises(ValueError, match=message):
        read_stats(path)
    assert read_stats(_file(tmp_path, "ok.jsonl", '{"id": 9223372036854775807, "p_hat": 0.5}\n'))[0] == [2**63 - 1]


def test_min_count_must_be_a_non_negative_integer(tmp_path: Path) -> None:
    stats = _file(tmp_path, "s.csv", "id,successes,count\na,0,0\nb,1,2\n")
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"min_count must be"):
            read_stats(stats, min_count=bad)  # type: ignore[arg-type]
    ids, p = read_stats(stats, min_count=0)
    assert ids == ["a", "b"] and np.isnan(p[0]) and p[1] == 0.5


def test_a_full_disk_while_writing_budgets_is_a_one_line_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "b.csv"
    out.write_text("old\n")
    p, budgets, buckets = _budget_columns(3)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ValueError, match=rf"^cannot write {re.escape(str(out))}: No space left on device$"):
        write_budgets(out, ["a", "b", "c"], p, budgets, buckets)
    assert out.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [out]  # old file kept, no temp left


def test_json_budgets_keep_ids_exactly(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    p, budgets, buckets = _budget_columns(len(IDS))
    write_budgets(out, IDS, p, budgets, buckets)
    got = json.loads(out.read_text())
    assert [r["id"] for r in got] == IDS
    assert got[1]["p_hat"] is None and got[0] == {"id": IDS[0], "p_hat": 0.0, "budget": 2, "bucket": BUCKET_NAMES[0]}


def test_write_budgets_refuses_bad_input(tmp_path: Path) -> None:
    p, budgets, buckets = _budget_columns(3)
    with pytest.raises(ValueError, match=r"cannot write .*b.txt: budgets are written as .json or .csv, not '.txt'"):
        write_budgets(tmp_path / "b.txt", ["a", "b", "c"], p, budgets, buckets)
    with pytest.raises(ValueError, match=r"must be 1-D of one length; got 2, \(3,\)"):
        write_budgets(tmp_path / "b.json", ["a", "b"], p, budgets, buckets)
    with pytest.raises(ValueError, match=r"ids\[1\]=1.5 is not a valid prompt id"):
        write_budgets(tmp_path / "b.json", ["a", 1.5, "c"], p, budgets, buckets)
    with pytest.raises(ValueError, match=r"budgets must be integers and buckets integer codes in \[0, 4\)"):
        write_budgets(tmp_path / "b.json", ["a", "b", "c"], p, budgets + 0.5, buckets)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- output paths
def test_check_output_path_accepts_a_new_file_in_a_new_folder_without_creating_it(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "b.csv"
    assert check_output_path(target) == target
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "b.txt", r"cannot write {d}/b.txt: budgets are written as .json or .csv, not '.txt'$"),
        (lambda d: d / "b", r"cannot write {d}/b: budgets are written as .json or .csv, not ''$"),
        (lambda d: (d / "dir.json").mkdir() or d / "dir.json", r"cannot write {d}/dir.json: it is a folder$"),
        (lambda d: _file(d, "f", "") / "b.json", r"cannot write {d}/f/b.json: {d}/f is not a folder$"),
    ],
)
def test_check_output_path_refuses_with_one_line(tmp_path: Path, make: object, message: str) -> None:
    target = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message.replace("{d}", re.escape(str(tmp_path)))):
        check_output_path(target)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc (not writable even by root)")
def test_check_output_path_refuses_an_unwritable_folder() -> None:
    for target in (Path("/proc/b.json"), Path("/proc/new-folder/b.json")):
        with pytest.raises(ValueError, match=r"^cannot write /proc/.*b.json: folder /proc is not writable \(.+\)$"):
            check_output_path(target)
