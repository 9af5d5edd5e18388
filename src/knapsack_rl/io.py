"""Crash-safe file writes, the state-file envelope and the JSONL run logs (standard library only; no torch).

Every file the package writes goes through :func:`atomic_write_bytes`:

1. the bytes go to a new temp file ``.{name}.{16 hex digits}.tmp`` in the target's folder, created
   with mode ``0o666`` minus the process umask (the same mode ``open(path, "w")`` would give, not
   the owner-only ``0o600`` of :func:`tempfile.mkstemp`), and held under an exclusive
   :func:`fcntl.flock` while it is written;
2. the temp file is flushed and ``fsync``-ed, renamed over the target with :func:`os.replace`
   (atomic on POSIX: a reader sees the old file or the new one, never a mix), and the folder is
   ``fsync``-ed so the rename itself survives a power cut;
3. before writing, temp files of the same target left by a writer that was killed (SIGKILL, OOM,
   power loss) are removed. A temp file is stale when nobody holds its lock: the kernel drops a
   ``flock`` when its process dies, while a live writer keeps its lock until after the rename, so
   two processes writing the same target at once never delete each other's temp file.

What survives a kill: at any instant the target is either absent, the complete old file or the
complete new file. What a kill can leave behind: one temp file, removed by the next write of the
same target. Platforms without :mod:`fcntl` (Windows) get steps 1-2 without the lock; stale temp
files are then kept (a live writer's file cannot be told from a dead one's), and a warning says so.

The JSONL helpers keep the per-step logs of a run consistent with its last checkpoint:
:func:`append_jsonl` adds one complete line per call and :func:`truncate_jsonl` cuts a log back to
the checkpoint's step on resume, atomically, dropping a line torn by a crash.

State files (the trainer's ``checkpoint.pt``, the TRL rule file, verl's run state, tracker files) share one
envelope, :func:`encode_state_file` / :func:`decode_state_file`: a magic, the kind of state and its
format version, a JSON header, named binary parts and one SHA-256 over all of it. Files the package did
not write (or wrote earlier) are read with :func:`read_file_bytes`, which refuses FIFOs, devices and
folders without blocking and caps the size.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

_TMP_SUFFIX = ".tmp"
# A temp file of this module (16 hex digits) or of the tempfile.mkstemp-based writer before it (8 chars).
_TMP_TOKEN = re.compile(r"[0-9a-f]{16}|[a-z0-9_]{8}")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically and durably (see the module docstring).

    Missing parent folders are created. Raises ``OSError`` if the folder cannot be written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(target)
    fd, tmp = _open_locked_temp(target)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)  # releases the lock; the temp name no longer exists after the rename


MAX_FILE_BYTES = 1 << 34
"""Default cap of :func:`read_file_bytes` (16 GiB): larger than any file the package reads."""


def read_file_bytes(path: str | os.PathLike[str], *, what: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path``: the one way the package reads a file it did not write.

    The file is opened without blocking (a FIFO named like a checkpoint cannot hang the reader) and
    checked to be a regular file before anything is read; devices, FIFOs, sockets and folders are
    refused, and so is a file larger than ``max_bytes``.

    Raises:
        ValueError: one line naming ``what``, the path and the reason (missing, not a regular file,
            too large, unreadable).
    """
    target = Path(path)
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ValueError(f"{what} {target} does not exist") from None
    except OSError as exc:
        raise ValueError(f"{what} {target} cannot be opened ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, device or socket)"
            raise ValueError(f"{what} {target} is {kind}")
        if info.st_size > max_bytes:
            raise ValueError(f"{what} {target} is {info.st_size} bytes, over the limit of {max_bytes}")
        chunks = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > max_bytes:  # the file grew while being read
                raise ValueError(f"{what} {target} is over the limit of {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise ValueError(f"{what} {target} is a folder") from None
        raise ValueError(f"{what} {target} cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------- state files
STATE_MAGIC = b"KNAPSACK-RL-STATE\x00v1\n"
"""The first bytes of every state file (:func:`encode_state_file`); ``v1`` is the envelope's own version."""
MAX_STATE_HEADER_BYTES = 1 << 28
"""Default cap of a state file's JSON header (256 MiB): a header is read into memory and parsed whole."""
_KIND_BYTES = 32
_DIGEST_BYTES = 32
_KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")
_PREAMBLE = len(STATE_MAGIC) + _KIND_BYTES + 4 + 8  # magic, kind, version, header length


@dataclass(frozen=True)
class StateFile:
    """A decoded state file: its ``kind``, ``version``, JSON ``meta`` and named binary ``parts``."""

    kind: str
    version: int
    meta: dict[str, Any]
    parts: dict[str, bytes]


def encode_state_file(kind: str, version: int, meta: Mapping[str, Any], parts: Mapping[str, bytes]) -> bytes:
    """The one persistence envelope of the package's state files (checkpoints, planner and run state).

    Layout (integers little-endian)::

        magic    22 bytes   STATE_MAGIC
        kind     32 bytes   ASCII name of what the file holds (e.g. "trainer-checkpoint"), NUL-padded
        version  4 bytes    unsigned: the format version of that kind
        length   8 bytes    unsigned: size n of the header
        header   n bytes    UTF-8 JSON {"meta": {...}, "parts": [[name, size], ...]}
        parts    the parts' bytes, in the header's order
        digest   32 bytes   SHA-256 of every byte above

    ``meta`` must be JSON (finite floats only); ``parts`` are opaque bytes (a tracker image, a
    ``torch.save`` of tensors). The digest detects accidents (torn writes, bit rot, edits); it does not
    authenticate a file, so a reader still validates every field of what it decodes.
    """
    if _KIND.fullmatch(kind) is None:
        raise ValueError(
            f"kind must be 1-32 lowercase letters, digits or '-' starting with a letter; got kind={kind!r}"
        )
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 1 << 32:
        raise ValueError(f"version must be an integer in [0, 2**32); got version={version!r}")
    for name, part in parts.items():
        if not isinstance(name, str) or not isinstance(part, bytes | bytearray | memoryview):
            raise ValueError(f"parts must map names (str) to bytes; got {name!r}: {type(part).__name__}")
    header = {"meta": dict(meta), "parts": [[name, len(part)] for name, part in parts.items()]}
    head = json.dumps(header, allow_nan=False, separators=(",", ":")).encode("utf-8")
    body = b"".join(
        [STATE_MAGIC, kind.encode("ascii").ljust(_KIND_BYTES, b"\0"), version.to_bytes(4, "little"),
         len(head).to_bytes(8, "little"), head, *(bytes(p) for p in parts.values())]
    )  # fmt: skip
    return body + hashlib.sha256(body).digest()


def _checked_body(data: bytes, source: str, what: str) -> bytes:
    """``data`` without its digest, once its size, magic and SHA-256 are checked (before anything is parsed)."""
    if len(data) < _PREAMBLE + _DIGEST_BYTES:
        if not STATE_MAGIC.startswith(data[: len(STATE_MAGIC)]):
            raise ValueError(f"{source}: not a knapsack-rl {what} (bad magic)")
        raise ValueError(f"{source}: {what} is truncated ({len(data)} bytes)")
    if not data.startswith(STATE_MAGIC):
        raise ValueError(f"{source}: not a knapsack-rl {what} (bad magic)")
    body, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    if hashlib.sha256(body).digest() != digest:
        raise ValueError(f"{source}: {what} is truncated or corrupt (SHA-256 mismatch)")
    return body


def decode_state_file(
    data: bytes,
    *,
    source: str,
    kind: str,
    version: int,
    parts: Iterable[str],
    max_header_bytes: int = MAX_STATE_HEADER_BYTES,
    more_parts: str | None = None,
    what: str = "state file",
) -> StateFile:
    """Check and decode :func:`encode_state_file` bytes of ``kind`` and ``version`` with exactly ``parts``
    (and any number of parts whose names start with ``more_parts``, e.g. a rule's ``"rule/"`` parts).

    The size, magic and digest are checked before anything is parsed; then the kind, the version, the
    header (JSON without NaN or duplicate keys, at most ``max_header_bytes``) and the part table.
    ``what`` names the file in the messages about its size, magic and digest (a tracker's bytes say
    "tracker file", also where they are a part of another state file).

    Raises:
        ValueError: one line, starting with ``source``, saying what is wrong.
    """
    body = _checked_body(bytes(data), source, what)
    pos = len(STATE_MAGIC)
    got_kind = body[pos : pos + _KIND_BYTES].rstrip(b"\0").decode("ascii", "replace")
    got_version = int.from_bytes(body[pos + _KIND_BYTES : pos + _KIND_BYTES + 4], "little")
    if got_kind != kind:
        raise ValueError(f"{source}: holds a {got_kind!r} state, not a {kind!r} state")
    if got_version != version:
        raise ValueError(
            f"{source}: {kind} format version {got_version} is not supported (this knapsack-rl reads version "
            f"{version}); load it with the knapsack-rl version that wrote it"
        )
    size = int.from_bytes(body[_PREAMBLE - 8 : _PREAMBLE], "little")
    if size > min(max_header_bytes, len(body) - _PREAMBLE):
        raise ValueError(f"{source}: header length {size} runs past the end of the file or over {max_header_bytes}")
    header = parse_json_object(body[_PREAMBLE : _PREAMBLE + size], f"{source}: header")
    if sorted(header) != ["meta", "parts"] or not isinstance(header["meta"], dict):
        raise ValueError(f"{source}: header must hold exactly 'meta' (an object) and 'parts'; got {sorted(header)}")
    table = _part_table(header["parts"], source)
    expected = sorted(parts)
    named = sorted(k for k in table if more_parts is None or not k.startswith(more_parts))
    if named != expected:
        also = f" (and parts named {more_parts}*)" if more_parts else ""
        raise ValueError(f"{source}: {kind} state must have the parts {expected}{also}; got {sorted(table)}")
    payload = body[_PREAMBLE + size :]
    if sum(table.values()) != len(payload):
        raise ValueError(f"{source}: the parts take {sum(table.values())} bytes but {len(payload)} follow the header")
    out, offset = {}, 0
    for name, n in table.items():
        out[name], offset = payload[offset : offset + n], offset + n
    return StateFile(kind, version, header["meta"], out)


def write_state_file(
    path: str | os.PathLike[str], kind: str, version: int, meta: Mapping[str, Any], parts: Mapping[str, bytes]
) -> None:
    """:func:`atomic_write_bytes` of :func:`encode_state_file`."""
    atomic_write_bytes(path, encode_state_file(kind, version, meta, parts))


def read_state_file(
    path: str | os.PathLike[str],
    *,
    what: str,
    kind: str,
    version: int,
    parts: Iterable[str],
    max_bytes: int = MAX_FILE_BYTES,
    legacy: Mapping[bytes, str] | None = None,
    more_parts: str | None = None,
) -> StateFile:
    """Read (:func:`read_file_bytes`) and decode (:func:`decode_state_file`) the state file ``path``.

    ``legacy`` maps the first bytes of an older format of the same file to what to tell its reader: such a
    file is refused with that advice instead of "bad magic".
    """
    data = read_file_bytes(path, what=what, max_bytes=max_bytes)
    for prefix, advice in (legacy or {}).items():
        if data.startswith(prefix):
            raise ValueError(f"{path}: {advice}")
    return decode_state_file(data, source=str(path), kind=kind, version=version, parts=parts, more_parts=more_parts)


def parse_json_object(data: bytes, source: str) -> dict[str, Any]:
    """A JSON object from UTF-8 ``data``: NaN, infinities and duplicate keys are refused, deep nesting too.

    Raises:
        ValueError: one line starting with ``source``.
    """
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
        raise ValueError(f"{source} is not valid JSON ({what})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{source} must be a JSON object; got {type(value).__name__}")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        dup = next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))
        raise ValueError(f"duplicate key {dup!r}")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _part_table(parts: object, source: str) -> dict[str, int]:
    """The header's ``[[name, size], ...]`` as an ordered dict; a malformed table raises naming ``source``."""
    if not isinstance(parts, list):
        raise ValueError(f"{source}: header 'parts' must be a list of [name, size]; got {type(parts).__name__}")
    table: dict[str, int] = {}
    for i, entry in enumerate(parts):
        ok = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
        if not ok or isinstance(entry[1], bool) or not isinstance(entry[1], int) or entry[1] < 0 or entry[0] in table:
            raise ValueError(f"{source}: header parts[{i}] must be a new [name, size >= 0]; got {entry!r:.80}")
        table[entry[0]] = entry[1]
    return table


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temp_files(target: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files of ``target`` whose writer is gone; returns the paths removed.

    A candidate is ``.{target name}.{token}.tmp`` in the target's folder; it is removed only if an
    exclusive non-blocking lock on it succeeds (nobody is writing it). Without :mod:`fcntl` nothing
    is removed.
    """
    target = Path(target)
    prefix = f".{target.name}."
    try:
        names = [n for n in os.listdir(target.parent) if _is_temp_name(n, prefix)]
    except FileNotFoundError:
        return []
    if names and fcntl is None:  # pragma: no cover - Windows
        logger.warning("cannot tell stale temp files of %s from live ones without fcntl; kept %s", target, names)
        return []
    removed = []
    for name in names:
        tmp = target.parent / name
        if _remove_if_unlocked(tmp):
            logger.warning("removed %s, left by a writer of %s that was killed", tmp, target)
            removed.append(tmp)
    return removed


def truncate_jsonl(path: str | os.PathLike[str], *, last_step: int) -> None:
    """Keep only the rows of a JSONL log whose ``step`` is ``<= last_step``; rewrite atomically.

    Used on resume, so that a log agrees with the checkpoint of step ``last_step`` (pass -1 to clear
    it). A missing file is left missing. An unreadable *last* line is a line torn by a crash
    (a kill or a full disk during :func:`append_jsonl`): it is dropped with a warning naming the
    file. An unreadable line anywhere else, or a row without an integer ``step``, raises
    ``ValueError`` naming the file and the line (1-based). The file is rewritten only if it changes.
    """
    target = Path(path)
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ends with a newline, as every complete log does
    keep: list[bytes] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = _parse_row(line)
        if row is None and number == len(lines):
            logger.warning("%s:%d: dropped a torn last line (%d bytes)", target, number, len(line))
            continue
        if row is None:
            raise ValueError(f"{target}:{number}: corrupt JSON line in a log (only the last line may be torn)")
        step = row.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"{target}:{number}: log row has no integer 'step'; got step={step!r}")
        if step <= last_step:
            keep.append(line)
    new = b"".join(line + b"\n" for line in keep)
    if new != data:
        atomic_write_bytes(target, new)


def append_jsonl(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Append ``row`` as one JSON line (one ``write`` of the whole line, then ``fsync``).

    Non-finite floats are refused (``ValueError``): write them as ``None``. A file whose last line
    is incomplete (a crash during an earlier append not yet cleaned by :func:`truncate_jsonl`) is
    refused too, since appending would glue the new row to the torn one.
    """
    target = Path(path)
    line = (json.dumps(row, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            raise ValueError(f"{target}: last line is incomplete; run truncate_jsonl on it before appending")
        view = memoryview(line)
        while view:  # a regular file takes the whole line at once unless the disk is full
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_row(line: bytes) -> dict[str, Any] | None:
    """The JSON object on ``line``, or None if the line is not one."""
    try:
        row = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return row if isinstance(row, dict) else None


def _is_temp_name(name: str, prefix: str) -> bool:
    if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
        return False
    return _TMP_TOKEN.fullmatch(name[len(prefix) : -len(_TMP_SUFFIX)]) is not None


def _open_locked_temp(target: Path) -> tuple[int, Path]:
    """Create and lock a fresh temp file next to ``target``; returns (fd, path).

    The lock is taken right after creation; if a concurrent cleaner removed the file in between
    (it saw an unlocked temp file), the path no longer names our file and we start again.
    """
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(8)}{_TMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        if fcntl is None:  # pragma: no cover - Windows
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)


def _remove_if_unlocked(tmp: Path) -> bool:
    """Remove ``tmp`` if no process holds its lock (its writer is dead)."""
    assert fcntl is not None
    try:
        fd = os.open(tmp, os.O_RDONLY)
    except FileNotFoundError:
        return False  # its writer renamed or removed it meanwhile
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        try:
            if os.stat(tmp).st_ino != os.fstat(fd).st_ino:
                return False
        except FileNotFoundError:
            return False
        tmp.unlink()
        return True
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ folder locks
LOCK_NAME = ".knapsack-rl.lock"
"""Name of the lock file :func:`lock_folder` keeps in a folder (a run directory, a cache)."""
_HOLDER_BYTES = 4096


class FolderLock:
    """An exclusive :func:`fcntl.flock` on a lock file, held until :meth:`release` or the process's death.

    The kernel drops the lock when the process ends in any way (exit, exception, SIGKILL, OOM), so a
    killed holder never blocks the next run; the lock file itself stays (removing it would let two
    processes lock two different files of the same name). Also a context manager.
    """

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd is not None

    def release(self) -> None:
        """Clear the holder's details and drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:  # pragma: no cover - the details are advisory; the lock goes with the descriptor
            logger.debug("could not clear %s", self.path)
        finally:
            os.close(fd)

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def lock_folder(folder: str | os.PathLike[str], *, what: str, wait: bool = False, name: str = LOCK_NAME) -> FolderLock:
    """Lock ``folder`` (created if missing) for this process: an exclusive ``flock`` on ``folder/name``.

    The holder writes its pid, host, start time and command line into the lock file; a process that
    finds the folder locked reads them. With ``wait=False`` it is refused at once, with ``wait=True`` it
    logs who holds the lock and blocks until the holder releases it or dies.

    Raises:
        ValueError: one line naming ``what`` and the folder: held by another process (its pid, host,
            start time and command), or the folder cannot be created or written.
    """
    target = Path(folder)
    lock_path = target / name
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ValueError(f"{what} {target} is not writable ({exc.strerror or exc})") from None
    if fcntl is None:  # pragma: no cover - Windows
        logger.warning("no fcntl on this platform: %s %s is not locked against other processes", what, target)
        return FolderLock(lock_path, fd)
    try:
        _acquire(fd, lock_path, what=what, target=target, wait=wait)
        _write_holder(fd)
    except BaseException:
        os.close(fd)
        raise
    return FolderLock(lock_path, fd)


def _acquire(fd: int, lock_path: Path, *, what: str, target: Path, wait: bool) -> None:
    assert fcntl is not None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        holder = describe_lock_holder(fd)
    if not wait:
        raise ValueError(f"{what} {target} is in use by {holder}; wait for it to finish or use another folder")
    logger.warning("%s %s is in use by %s; waiting for it to finish", what, target, holder)
    fcntl.flock(fd, fcntl.LOCK_EX)
    logger.info("%s %s: lock acquired after waiting", what, target)


def describe_lock_holder(fd: int) -> str:
    """Who holds the lock file open as ``fd``: ``pid 123 on host h (started ...): command``."""
    try:
        info = json.loads(os.pread(fd, _HOLDER_BYTES, 0))
        pid, host, started, command = (info[k] for k in ("pid", "host", "started", "command"))
    except (OSError, ValueError, TypeError, KeyError):
        return "another process (it has not written its details yet)"
    mine = " (this very process: release its other lock first)" if pid == os.getpid() and host == _host() else ""
    return f"pid {pid} on host {host} (started {started}): {command}{mine}"


def _write_holder(fd: int) -> None:
    """Write this process's details into the (locked) lock file: rewritten in place, never replaced,
    since the lock belongs to the file's inode; readers see the details or an empty file."""
    import datetime
    import shlex
    import sys

    command = " ".join(shlex.quote(a) for a in [os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])
    info = {
        "pid": os.getpid(),
        "host": _host(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command[:1000],
    }
    data = json.dumps(info).encode("utf-8")[:_HOLDER_BYTES]
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _host() -> str:
    import socket

    return socket.gethostname()
