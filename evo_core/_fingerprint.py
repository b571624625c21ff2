"""`model_fingerprint(path)`: a cheap content hash of a model's weights (seconds for a 7B model)
that a resumed study compares: a model replaced under the same path is a different search (a LoRA
adapter source: its base's fingerprint and the adapter's files, whole). Pickled
weights (a pool that allows them) are hashed the same way, as files (name, size, samples)."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from ._adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from ._model_checks import pickled_weight_files
from ._paths import split_adapter_ref
from ._safetensors import safetensors_files, safetensors_header

FINGERPRINT_SAMPLES = 3  # 1 MiB samples per safetensors file: its start, middle and end
SAMPLE_BYTES = 1 << 20


def model_fingerprint(path: str) -> str:
    """The fingerprint below; for a LoRA adapter source (`BASE+ADAPTER`, _adapters.py), sha256 over
    its base's fingerprint and every byte of the adapter's two files (adapters are small)."""
    split = split_adapter_ref(path)
    if split is None:
        return _weights_fingerprint(path)
    base, adapter = split
    digest = hashlib.sha256(f"lora:{_weights_fingerprint(base)}:".encode())
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        with open(Path(adapter).expanduser() / name, "rb") as handle:
            digest.update(f"{name}:".encode())
            for block in iter(lambda: handle.read(SAMPLE_BYTES), b""):
                digest.update(block)
    return digest.hexdigest()


def _weights_fingerprint(path: str) -> str:
    """sha256 over what identifies a model's weights without reading them all: config.json, and per
    safetensors file its name, size, header (every tensor's name, dtype, shape and offsets) and three
    1 MiB samples (start, middle, end of the data). Weights replaced by a fine-tune or a re-download
    of another revision change it; an edit confined to bytes outside the samples that keeps every
    shape does not. A hub id hashes its cached snapshot when there is one, else just the id."""
    local = Path(path)
    if not local.is_dir():
        local = _cached_snapshot(path)
        if local is None:
            return f"hub:{path}"
    digest = hashlib.sha256((local / "config.json").read_bytes())
    # pickled weights (pool.allow_pickle_weights) only where there are no safetensors: unread, as files
    files = safetensors_files(str(local)) or pickled_weight_files(local)
    for file in files:
        raw = safetensors_header(file)[0] if file.suffix == ".safetensors" else b""
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}:".encode() + raw)
        with open(file, "rb") as handle:
            for start in _sample_offsets(size):
                handle.seek(start)
                digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def _sample_offsets(size: int) -> Iterable[int]:
    last = max(size - SAMPLE_BYTES, 0)
    return sorted({last * k // (FINGERPRINT_SAMPLES - 1) for k in range(FINGERPRINT_SAMPLES)})


def _cached_snapshot(repo_id: str) -> Path | None:
    import huggingface_hub

    try:
        return Path(huggingface_hub.snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not (fully) cached: nothing local to hash
        return None
