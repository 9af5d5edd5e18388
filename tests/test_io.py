"""knapsack_rl.io: atomic writes that survive a kill, and the JSONL logs a resume cuts back."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import knapsack_rl
from knapsack_rl.io import (
    LOCK_NAME,
    STATE_MAGIC,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_text,
    decode_state_file,
    encode_state_file,
    lock_folder,
    read_file_bytes,
    read_state_file,
    remove_stale_temp_files,
    truncate_jsonl,
    write_state_file,
)

SRC = Path(knapsack_rl.__file__).resolve().parents[1]

# A writer that stalls after writing and fsyncing its temp file, just before the rename.
STALLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import knapsack_rl.io as kio

    def stall(src, dst):
        print("READY", flush=True)
        time.sleep(120)

    os.replace = stall
    kio.atomic_write_bytes(sys.argv[1], b"x" * int(sys.argv[2]))
    """
)


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def _stalled_writer(target: Path, size: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", STALLED_WRITER, str(target), str(size)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    return proc


# ------------------------------------------------------------------------------ atomic writes
def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_text(target, "twö")
    assert target.read_bytes() == "twö".encode()
    assert _temp_files(target.parent) == []


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_files_get_the_umask_default_mode_not_owner_only(tmp_path: Path, umask: None, mask: int) -> None:
    os.umask(mask)
    target = tmp_path / f"f{mask:o}.json"
    atomic_write_bytes(target, b"{}")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_rename_is_followed_by_a_directory_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(("replace",))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert events == [("fsync", "file"), ("replace",), ("fsync", "folder")]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and _temp_files(tmp_path) == []


def test_a_killed_writer_leaves_a_temp_file_that_the_next_write_removes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "tracker.bin"
    atomic_write_bytes(target, b"old")
    proc = _stalled_writer(target, 1_000_000)
    try:
        (temp,) = _temp_files(tmp_path)
        assert temp.stat().st_size == 1_000_000  # a full-size temp file, about to be renamed
        atomic_write_bytes(target, b"concurrent")  # the writer is alive: its temp file is not stale
        assert temp.exists() and target.read_bytes() == b"concurrent"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _temp_files(tmp_path) == [temp]  # what a SIGKILL leaves behind
    with caplog.at_level(logging.WARNING, logger="knapsack_rl.io"):
        atomic_write_bytes(target, b"next")
    assert target.read_bytes() == b"next" and _temp_files(tmp_path) == []
    assert f"removed {temp}, left by a writer of {target} that was killed" in caplog.text


def test_only_temp_files_of_the_same_target_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "t.bin"
    ours = [tmp_path / ".t.bin.0123456789abcdef.tmp", tmp_path / ".t.bin.ab_c1234.tmp"]  # ours, mkstemp-style
    others = [
        tmp_path / ".u.bin.0123456789abcdef.tmp",  # another target's
        tmp_path / ".t.bin.not-ours.tmp",  # not a name this module makes
        tmp_path / "t.bin.tmp",
        tmp_path / ".t.bin.0123456789abcdef.tmp.keep",
    ]
    for p in ours + others:
        p.write_bytes(b"x")
    assert sorted(remove_stale_temp_files(target)) == sorted(ours)
    assert all(p.exists() for p in others)
    assert remove_stale_temp_files(tmp_path / "missing" / "t.bin") == []


# ------------------------------------------------------------------------------------ JSONL logs
def _log(path: Path, steps: list[int]) -> Path:
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in steps))
    return path


def test_truncate_jsonl_keeps_rows_up_to_the_checkpoint_step(tmp_path: Path) -> None:
    log = _log(tmp_path / "metrics.jsonl", [1, 2, 3, 4])
    truncate_jsonl(log, last_step=2)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    inode = log.stat().st_ino
    truncate_jsonl(log, last_step=2)  # nothing to cut: the file is not rewritten
    assert log.stat().st_ino == inode
    truncate_jsonl(log, last_step=-1)  # a fresh run clears the log
    assert log.read_bytes() == b""
    truncate_jsonl(tmp_path / "missing.jsonl", last_step=3)
    assert not (tmp_path / "missing.jsonl").exists()


def test_truncate_jsonl_drops_a_torn_last_line_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = _log(tmp_path / "metrics.jsonl", [1, 2])
    with log.open("a") as f:
        f.write('{"step": 3, "lo')  # a kill or a full disk in the middle of an append
    with caplog.at_level(logging.WARNING, logger="knapsack_rl.io"):
        truncate_jsonl(log, last_step=5)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    assert f"{log}:3: dropped a torn last line" in caplog.text
    log.write_bytes(log.read_bytes() + b"\x00" * 64)  # the zero tail some file systems leave after a crash
    truncate_jsonl(log, last_step=5)
    assert log.read_text().count("\n") == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"step": 1}\n{"step": 2, "p\n{"step": 3}\n',
            r":2: corrupt JSON line in a log \(only the last line may be torn\)$",
        ),
        ('{"step": 1}\n[1, 2]\n{"step": 3}\n', r":2: corrupt JSON line in a log"),
        ('{"step": 1}\n{"loss": 2}\n', r":2: log row has no integer 'step'; got step=None$"),
        ('{"step": 1.0}\n', r":1: log row has no integer 'step'; got step=1.0$"),
    ],
)
def test_truncate_jsonl_refuses_a_corrupt_line_that_is_not_a_torn_last_one(
    tmp_path: Path, content: str, message: str
) -> None:
    log = tmp_path / "allocations.jsonl"
    log.write_text(content)
    with pytest.raises(ValueError, match=f"^{re.escape(str(log))}{message}"):
        truncate_jsonl(log, last_step=1)
    assert log.read_text() == content


def test_truncate_jsonl_rewrites_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(tmp_path / "metrics.jsonl", list(range(1, 200)))
    before = log.read_bytes()

    def killed(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # stands for a kill between writing the new log and renaming it

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        truncate_jsonl(log, last_step=10)
    assert log.read_bytes() == before and _temp_files(tmp_path) == []


def test_append_jsonl_writes_whole_lines_and_refuses_what_would_corrupt_the_log(tmp_path: Path, umask: None) -> None:
    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, {"step": 1, "loss": 0.5})
    append_jsonl(log, {"step": 2, "loss": None, "id": "ü"})
    assert [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] == [
        {"step": 1, "loss": 0.5},
        {"step": 2, "loss": None, "id": "ü"},
    ]
    assert stat.S_IMODE(log.stat().st_mode) == 0o644
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        append_jsonl(log, {"step": 3, "loss": float("nan")})
    with log.open("a") as f:
        f.write('{"step": 3')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(log))}: last line is incomplete; run truncate_jsonl"):
        append_jsonl(log, {"step": 4})
    truncate_jsonl(log, last_step=10)
    append_jsonl(log, {"step": 3})
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]


def test_read_file_bytes_refuses_fifos_folders_devices_and_oversized_files_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "checkpoint.pt"
    os.mkfifo(fifo)  # nobody writes it: a blocking open would hang forever
    with pytest.raises(ValueError, match=r"^checkpoint .*checkpoint.pt is not a regular file \(a FIFO"):
        read_file_bytes(fifo, what="checkpoint")
    with pytest.raises(ValueError, match=r"^config .* is a folder$"):
        read_file_bytes(tmp_path, what="config")
    with pytest.raises(ValueError, match=r"^stats file /dev/zero is not a regular file"):
        read_file_bytes("/dev/zero", what="stats file")
    with pytest.raises(ValueError, match=r"^data file .*missing.jsonl does not exist$"):
        read_file_bytes(tmp_path / "missing.jsonl", what="data file")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 11)
    with pytest.raises(ValueError, match=r"is 11 bytes, over the limit of 10$"):
        read_file_bytes(big, what="tracker file", max_bytes=10)
    assert read_file_bytes(big, what="tracker file", max_bytes=11) == b"x" * 11


# ------------------------------------------------------------------------------- the state-file envelope
def test_a_state_file_round_trips_and_every_truncation_and_bit_flip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.bin"
    write_state_file(path, "demo", 3, {"step": 7, "name": "x"}, {"a": b"\x00\x01", "b": b"", "c": b"xyz"})
    got = read_state_file(path, what="demo state", kind="demo", version=3, parts=["c", "b", "a"])
    assert (got.kind, got.version, got.meta) == ("demo", 3, {"step": 7, "name": "x"})
    assert got.parts == {"a": b"\x00\x01", "b": b"", "c": b"xyz"}
    data = path.read_bytes()
    for cut in range(len(data)):
        with pytest.raises(ValueError, match=r"^f: (state file is truncated|not a knapsack-rl state file)"):
            decode_state_file(data[:cut], source="f", kind="demo", version=3, parts=["a", "b", "c"])
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x10
        with pytest.raises(ValueError, match=r"^f: (state file is truncated or corrupt|not a knapsack-rl state)"):
            decode_state_file(bytes(flipped), source="f", kind="demo", version=3, parts=["a", "b", "c"])


def _forged(head: bytes, payload: bytes = b"", kind: bytes = b"demo", version: int = 1) -> bytes:
    """An envelope around any header bytes with a valid checksum: what a forger (there is no key) writes."""
    body = STATE_MAGIC + kind.ljust(32, b"\0") + version.to_bytes(4, "little") + len(head).to_bytes(8, "little")
    body += head + payload
    return body + hashlib.sha256(body).digest()


FORGED_ENVELOPES = [
    (encode_state_file("other", 1, {}, {}), r"holds a 'other' state, not a 'demo' state"),
    (encode_state_file("demo", 2, {}, {}), r"demo format version 2 is not supported .*version 1\)"),
    (_forged(b"{}"[:1]), r"header is not valid JSON"),
    (_forged(b"[" * 100_000 + b"]" * 100_000), r"header is not valid JSON \(nested too deeply\)"),
    (_forged(b'{"meta": {"a": NaN}, "parts": []}'), r"header is not valid JSON \(NaN is not a JSON number\)"),
    (_forged(b'{"meta": {}, "meta": {}, "parts": []}'), r"header is not valid JSON \(duplicate key 'meta'\)"),
    (_forged(b'["meta", "parts"]'), r"header must be a JSON object; got list"),
    (_forged(b'{"meta": [], "parts": []}'), r"header must hold exactly 'meta' \(an object\) and 'parts'"),
    (_forged(b'{"meta": {}}'), r"header must hold exactly 'meta' \(an object\) and 'parts'; got \['meta'\]"),
    (_forged(b'{"meta": {}, "parts": {"a": 1}}'), r"header 'parts' must be a list of \[name, size\]; got dict"),
    (_forged(b'{"meta": {}, "parts": [["a", -1]]}'), r"header parts\[0\] must be a new \[name, size >= 0\]"),
    (_forged(b'{"meta": {}, "parts": [["a", true]]}'), r"header parts\[0\] must be a new"),
    (_forged(b'{"meta": {}, "parts": [["a", 1], ["a", 1]]}', b"xy"), r"header parts\[1\] must be a new"),
    (_forged(b'{"meta": {}, "parts": [["b", 1]]}', b"x"), r"demo state must have the parts \['a'\]; got \['b'\]"),
    (_forged(b'{"meta": {}, "parts": [["a", 9]]}', b"x"), r"the parts take 9 bytes but 1 follow the header"),
    (_forged(b"\xff\xfe"), r"header is not valid JSON \(.*codec can't decode"),
]


@pytest.mark.parametrize(("data", "message"), FORGED_ENVELOPES, ids=[m[:40] for _, m in FORGED_ENVELOPES])
def test_a_forged_envelope_with_a_valid_checksum_is_refused_in_one_line(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^f: .*{message}") as info:
        decode_state_file(data, source="f", kind="demo", version=1, parts=["a"])
    assert "\n" not in str(info.value) and type(info.value) is ValueError


def test_a_header_length_past_the_file_or_the_cap_is_refused_before_parsing() -> None:
    data = bytearray(encode_state_file("demo", 1, {"k": "v" * 100}, {"a": b""}))
    with pytest.raises(ValueError, match=r"^f: header length \d+ runs past the end of the file or over 64$"):
        decode_state_file(bytes(data), source="f", kind="demo", version=1, parts=["a"], max_header_bytes=64)
    at = len(STATE_MAGIC) + 32 + 4
    data[at : at + 8] = (1 << 62).to_bytes(8, "little")
    data[-32:] = hashlib.sha256(bytes(data[:-32])).digest()
    with pytest.raises(ValueError, match=r"^f: header length 4611686018427387904 runs past the end"):
        decode_state_file(bytes(data), source="f", kind="demo", version=1, parts=["a"])


def test_read_state_file_names_an_older_format_and_refuses_what_is_not_a_file(tmp_path: Path) -> None:
    path = tmp_path / "state.bin"
    path.write_bytes(b"OLD-FORMAT\x00v1\n" + b"\0" * 100)
    legacy = {b"OLD-FORMAT\x00": "an old file; use the old version"}
    with pytest.raises(ValueError, match=r"state.bin: an old file; use the old version$"):
        read_state_file(path, what="s", kind="demo", version=1, parts=[], legacy=legacy)
    with pytest.raises(ValueError, match=r"state.bin: not a knapsack-rl state file \(bad magic\)$"):
        read_state_file(path, what="s", kind="demo", version=1, parts=[])
    (tmp_path / "dir.bin").mkdir()
    with pytest.raises(ValueError, match=r"^s .*dir.bin is a folder$"):
        read_state_file(tmp_path / "dir.bin", what="s", kind="demo", version=1, parts=[])
    (tmp_path / "big.bin").write_bytes(b"\0" * 2000)
    with pytest.raises(ValueError, match=r"^s .*big.bin is 2000 bytes, over the limit of 1000$"):
        read_state_file(tmp_path / "big.bin", what="s", kind="demo", version=1, parts=[], max_bytes=1000)


def test_encode_state_file_refuses_what_it_could_not_read_back() -> None:
    with pytest.raises(ValueError, match=r"Out of range float values are not JSON compliant"):
        encode_state_file("demo", 1, {"x": float("nan")}, {})
    with pytest.raises(ValueError, match=r"^kind must be 1-32 lowercase letters"):
        encode_state_file("Demo Kind", 1, {}, {})
    with pytest.raises(ValueError, match=r"^version must be an integer in \[0, 2\*\*32\); got version=True"):
        encode_state_file("demo", True, {}, {})
    with pytest.raises(ValueError, match=r"^parts must map names \(str\) to bytes; got 'a': str"):
        encode_state_file("demo", 1, {}, {"a": "text"})  # type: ignore[dict-item]


# ------------------------------------------------------------------------------ folder locks
HOLDER = textwrap.dedent(
    """
    import sys, time
    from knapsack_rl.io import lock_folder

    lock = lock_folder(sys.argv[1], what="out_dir", wait=sys.argv[2] == "wait")
    print("LOCKED", flush=True)
    time.sleep(float(sys.argv[3]))
    """
)


def _holder(folder: Path, *, wait: bool = False, hold_s: float = 120) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", HOLDER, str(folder), "wait" if wait else "now", str(hold_s)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_a_locked_folder_is_refused_naming_the_holder_until_the_holder_is_killed(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    proc = _holder(folder)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "LOCKED"
        host = re.escape(socket.gethostname())
        expected = (
            rf"^out_dir {re.escape(str(folder))} is in use by pid {proc.pid} on host {host} "
            rf"\(started \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\): -c {re.escape(str(folder))} now 120; "
            r"wait for it to finish or use another folder$"
        )
        with pytest.raises(ValueError, match=expected):
            lock_folder(folder, what="out_dir")
    finally:
        proc.send_signal(signal.SIGKILL)  # the kernel drops a dead process's flock
        proc.wait()
    with lock_folder(folder, what="out_dir") as lock:
        assert lock.held and json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not lock.held and (folder / LOCK_NAME).read_bytes() == b""  # released: details cleared


def test_a_waiting_locker_gets_the_lock_when_the_holder_releases_it(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    first = lock_folder(folder, what="warmstart_dir")
    waiter = _holder(folder, wait=True, hold_s=0)
    try:
        time.sleep(1.0)
        assert waiter.poll() is None  # blocked while this process holds the lock
        first.release()
        out, err = waiter.communicate(timeout=60)
    finally:
        waiter.kill()
        waiter.wait()
    assert out.strip() == "LOCKED" and waiter.returncode == 0
    assert f"in use by pid {os.getpid()} on host" in err and "waiting for it to finish" in err


def test_a_second_lock_in_the_same_process_is_refused_and_an_unwritable_folder_is_one_line(tmp_path: Path) -> None:
    mine = r"is in use by pid \d+ on host .* \(this very process: release its other lock first\); wait"
    with lock_folder(tmp_path, what="out_dir"), pytest.raises(ValueError, match=mine):
        lock_folder(tmp_path, what="out_dir")
    for folder in (Path("/proc/knapsack-rl-run"), Path("/proc")):  # not writable, even by root
        with pytest.raises(ValueError, match=rf"^out_dir {folder} is not writable \(.+\)$"):
            lock_folder(folder, what="out_dir")


# ------------------------------------------------------------------------------ the write audit
# The only places in src/ that write files other than through atomic_write_*: each writes into memory or a
# temporary folder first, or is a documented exception (append-only JSONL logs, TensorBoard's event writer).
WRITE_METHODS = {"write_text", "write_bytes", "savefig", "save_pretrained", "write_table", "to_csv", "to_parquet",
                 "to_json", "save_to_disk", "SummaryWriter"}  # fmt: skip
WRITE_FUNCTIONS = {"torch.save", "json.dump", "pickle.dump", "np.save", "np.savez", "shutil.copy", "shutil.copy2",
                   "shutil.copyfile", "shutil.copytree", "shutil.move"}  # fmt: skip
ALLOWED = {
    ("report/plots.py", "save_figure", "savefig"),  # into a BytesIO, then atomic_write_bytes
    ("models/warmstart.py", "_publish", "save_pretrained"),  # into a temporary folder, fsynced, then renamed
    ("train/trainer.py", "encode_checkpoint", "torch.save"),  # into a BytesIO
    ("tasks/verl_data.py", "write_verl", "write_table"),  # into a BytesIO
    ("train/logging_utils.py", "__init__", "SummaryWriter"),  # TensorBoard's own append-only event files
}


def _write_calls(path: Path) -> Iterator[tuple[str, str, int]]:
    """(function, call name, line) of every call in ``path`` that writes a file or may write one."""
    import ast

    tree = ast.parse(path.read_text())
    for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
        for node in ast.walk(func):
            if not isinstance(node, ast.Call):
                continue
            target = node.func
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                qualified = f"{target.value.id}.{name}"
            else:
                qualified = name
            positional = node.args[1] if len(node.args) > 1 else None
            mode = next((k.value for k in node.keywords if k.arg == "mode"), positional)
            writing_open = name == "open" and isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+")
            if name in WRITE_METHODS or qualified in WRITE_FUNCTIONS or writing_open:
                name = qualified if qualified in WRITE_FUNCTIONS else name
                yield func.name, name, node.lineno


def test_every_file_write_in_src_goes_through_the_atomic_writers() -> None:
    package = Path(knapsack_rl.__file__).resolve().parent
    found = {
        (str(path.relative_to(package)), func, name, line)
        for path in package.rglob("*.py")
        if path.name != "io.py" or path.parent != package
        for func, name, line in _write_calls(path)
    }
    unexpected = [f"{p}:{n} {func}() calls {name}" for p, func, name, n in found if (p, func, name) not in ALLOWED]
    assert sorted(unexpected) == []
