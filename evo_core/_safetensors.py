"""Safetensors headers, read without reading any weight: a file's raw header and parsed form, after
checking the file holds all the data the header declares (a copy cut short fails here in one line,
not as a loader traceback), and the tensor shapes of a local model directory."""
from __future__ import annotations

import json
from pathlib import Path


def safetensors_header(file: Path) -> tuple[bytes, dict]:
    """A safetensors file's raw header and its parsed form, after checking that the file holds all
    the data the header declares (a copy cut short fails here, not as a loader traceback)."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else None
        raw = handle.read(length) if length is not None and 8 + length <= size else b""
    try:
        header = json.loads(raw)
    except ValueError:
        raise ValueError(f"{file}: not a complete safetensors file ({size} bytes, unreadable header); "
                         f"download or save it again") from None
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if 8 + len(raw) + end > size:
        raise ValueError(f"{file}: truncated ({size} bytes; its header declares {8 + len(raw) + end}); "
                         f"download or save it again")
    return raw, header


def safetensors_files(path: str) -> list[Path]:
    return sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []


def header_shapes(name: str, path: str) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes from local safetensors headers (no weights read), every file checked complete;
    None if not local."""
    files = safetensors_files(path)
    if not files:
        return None
    shapes = {}
    for file in files:
        try:
            _, header = safetensors_header(file)
        except ValueError as err:
            raise ValueError(f"model {name!r}: {err}") from None
        shapes.update({key: tuple(entry["shape"]) for key, entry in header.items() if key != "__metadata__"})
    return shapes
