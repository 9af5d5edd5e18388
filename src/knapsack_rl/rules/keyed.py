"""Counter-based random numbers: U(0, 1) draws that depend only on a key (common random numbers).

Used by the simulator for rewards (every rule sees the same reward for rollout j of prompt i in epoch
e) and by rules that flip coins (GRESO-like skipping), so that two runs with the same seed make the
same decisions whatever else they do. NumPy only.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

REWARD_STREAM, SKIP_STREAM = 1, 2
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64 finaliser (a bijection on 64-bit words with good avalanche)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def keyed_uniform(seed: int, stream: int, prompt: ArrayLike, epoch: ArrayLike, index: ArrayLike) -> NDArray[np.float64]:
    """U(0, 1) draws that depend only on (seed, stream, prompt, epoch, index), broadcast together.

    ``h = mix(mix(mix(mix(seed ^ stream) + prompt) + epoch) + index)``, then ``(h >> 11) / 2^53``.
    ``prompt`` must be integer keys (see :func:`id_keys` for string prompt ids).
    """
    with np.errstate(over="ignore"):
        h = _mix(np.asarray(((seed & 0xFFFFFFFF) << 8) ^ stream, dtype=np.uint64) + _GOLD)
        for part in (prompt, epoch, index):
            h = _mix(h + np.asarray(part, dtype=np.int64).astype(np.uint64) * _GOLD)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def id_keys(prompt_ids: NDArray[Any]) -> NDArray[np.int64]:
    """Integer keys of prompt ids for :func:`keyed_uniform`: ints as they are, strs by a stable hash.

    The hash is the first 8 bytes of ``blake2b(id.encode())`` (the same in every process, unlike
    Python's ``hash``). Shape (K,) -> (K,).
    """
    ids = np.asarray(prompt_ids)
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    out = np.empty(ids.size, dtype=np.int64)
    for k, pid in enumerate(ids.tolist()):
        if isinstance(pid, str):
            out[k] = int.from_bytes(hashlib.blake2b(pid.encode(), digest_size=8).digest(), "little", signed=True)
        elif isinstance(pid, int) and not isinstance(pid, bool):
            out[k] = pid
        else:
            raise ValueError(f"prompt ids must be ints or strs; prompt_ids[{k}]={pid!r} ({type(pid).__name__})")
    return out
