"""Visual QA data sources: the paper's two Japanese VQA sets, read from local files.

    load_split("search", {"source": "ja_vg_vqa", "path": "JA-VG-VQA-500/data/test-00000-of-00001.parquet"})
    load_split("test", {"source": "ja_vlm_wild", "path": "JA-VLM-Bench-In-the-Wild/data/test-00000-of-00001.parquet"})
    load_split("search", {"source": "ja_vg_vqa", "dataset": "SakanaAI/JA-VG-VQA-500", "split": "train"})  # the hub
    # -> [{"image": PIL.Image.Image (RGB), "question": str, "answer": str, "image_id": str | None}, ...]

`dataset=` fetches the hub dataset's parquet shards of `split` (data/<split>-*.parquet) into the HF
cache (a GPU user's setup; offline it fails in one line saying how to point `path` at a copy).

VQA sources return dicts (VQAItem), where the text sources return (question, answer) tuples.
Layouts, as the hub datasets have them when downloaded (their dataset cards' `dataset_info`) and
as SakanaAI/evolutionary-model-merge reads them (evomerge/eval/ja_vg_vqa.py, ja_vlm_wild.py):

- "ja_vg_vqa" (SakanaAI/JA-VG-VQA-500: "test", 500 rows, the set the paper reports; "train",
  1,000 rows, our search set): one row per image, columns image_id, url, width, height, coco_id,
  flickr_id, `qas` (a list of {question, answer, qa_id, q_objects, a_objects}) and `image`. As in
  the paper's `extract_qa`, the first QA of each row is the item; the others are unused. The
  item's image_id is "visual_genome:<image_id>" (None without that column).
- "ja_vlm_wild" (SakanaAI/JA-VLM-Bench-In-the-Wild, "test", 50 rows): columns page_url, image_url,
  `image`, `question`, `answer`, one item per row; the item's image_id is its image_url.

The image ids are what the split-isolation check (_data.check_disjoint) compares, besides the
pixels: a search item must not show an image of a test item, whatever it asks about it.

A file is .parquet (the hub's: `image` is a struct {bytes, path}, bytes being the encoded file;
when bytes is null, path names the file) or .jsonl (one JSON object per line with the same
columns; `image` is a path, relative to the .jsonl file's folder, or {"path": ...}).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

from ._data import SOURCES, VQAItem


def _rows(path: Path, columns: tuple[str, ...], optional: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """The rows of a .parquet or .jsonl file (`columns`, and those of `optional` it has), with a
    one-line error for a missing column."""
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
        except Exception as err:
            raise ValueError(f"{path}: not a readable parquet file ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''})") from None
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r}; columns: {schema.names}")
        yield from pq.read_table(path, columns=[*columns, *(c for c in optional if c in schema.names)]).to_pylist()
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno}: not JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
                missing = [c for c in columns if c not in row]
                if missing:
                    raise ValueError(f"{path}:{lineno}: no column {missing[0]!r}; columns: {list(row)}")
                yield row
    else:
        raise ValueError(f"{path}: a VQA data file must end in .parquet or .jsonl")


def _image(value: Any, base: Path, where: str):
    """An RGB PIL image from a parquet image struct {bytes, path}, a path, or {"path": ...}."""
    from PIL import Image

    data = value.get("bytes") if isinstance(value, dict) else None
    ref = value.get("path") if isinstance(value, dict) else value
    if data is None:
        if not isinstance(ref, str) or not ref:
            raise ValueError(f"{where}: no image (expected image bytes or a path, got {value!r:.80})")
        file = base / ref  # an absolute path stays as it is
        if not file.is_file():
            raise FileNotFoundError(f"{where}: image file not found: {file}")
        data = file.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")  # decodes it all: a truncated file fails here, not later
    except Exception as err:
        raise ValueError(f"{where}: cannot read the image{f' {ref}' if ref else ''} "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def _text(value: Any, field: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: empty or non-text {field!r} ({value!r:.80})")
    return value.strip()


def _item(row: dict[str, Any], qa: dict[str, Any], base: Path, where: str, image_id: str | None) -> VQAItem:
    return {"image": _image(row["image"], base, where),
            "question": _text(qa.get("question"), "question", where),
            "answer": _text(qa.get("answer"), "answer", where),
            "image_id": image_id}


def _files(path: str | Path | None, dataset: str | None, split: str) -> list[Path]:
    """The local file `path`, or the hub dataset's parquet shards of `split` (downloaded once)."""
    if (path is None) == (dataset is None):
        raise ValueError("a VQA split needs path= (a local .parquet or .jsonl) or dataset= (a hub id), not both")
    if path is not None:
        return [Path(path)]
    import huggingface_hub

    try:
        local = huggingface_hub.snapshot_download(dataset, repo_type="dataset", allow_patterns=[f"data/{split}-*"])
    except Exception as err:  # offline, unknown, gated
        raise FileNotFoundError(
            f"dataset {dataset!r} cannot be fetched ({type(err).__name__}); download it (hf download "
            f"{dataset} --repo-type dataset --local-dir DIR) and set path=DIR/data/{split}-00000-of-00001.parquet") from None
    files = sorted(Path(local).glob(f"data/{split}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"dataset {dataset!r} has no data/{split}-*.parquet; is {split!r} its split?")
    return files


@SOURCES.register("ja_vg_vqa")
def load_ja_vg_vqa(*, path: str | Path | None = None, dataset: str | None = None, split: str = "test") -> list[VQAItem]:
    """JA-VG-VQA-500's layout: image + `qas` per row; the first QA is the item (as the paper)."""
    items = []
    for file in _files(path, dataset, split):
        for i, row in enumerate(_rows(file, ("image", "qas"), optional=("image_id",))):
            where = f"{file} row {i}"
            qas = row["qas"]
            if not isinstance(qas, list) or not qas or not isinstance(qas[0], dict):
                raise ValueError(f"{where}: 'qas' must be a non-empty list of {{question, answer}}, got {qas!r:.80}")
            image_id = row.get("image_id")
            items.append(_item(row, qas[0], file.parent, where,
                               image_id=None if image_id is None else f"visual_genome:{image_id}"))
    return items


@SOURCES.register("ja_vlm_wild")
def load_ja_vlm_wild(*, path: str | Path | None = None, dataset: str | None = None,
                     split: str = "test") -> list[VQAItem]:
    """JA-VLM-Bench-In-the-Wild's layout: image, question, answer per row; image_url is the image's id."""
    return [_item(row, row, file.parent, f"{file} row {i}", image_id=row.get("image_url") or None)
            for file in _files(path, dataset, split)
            for i, row in enumerate(_rows(file, ("image", "question", "answer"), optional=("image_url",)))]
