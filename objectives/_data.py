"""Evaluation data: split specs -> items, and the split-isolation check.

Text sources (tsv, hf, zoo) give (question, gold answer) tuples; visual QA sources ("ja_vg_vqa",
"ja_vlm_wild", see _vqa_data.py) give dicts {"image": PIL.Image.Image (RGB), "question": str,
"answer": str, "image_id": str or None (the source's own id of the image, if it has one)}.

A split spec is a dict naming a registered source plus that source's keys, and an optional
"limit" (keep the first N items):

    {"source": "tsv", "path": "mgsm_ja.tsv"}                      # question<TAB>answer per line
    {"source": "mgsm", "lang": "ja", "path": None}               # MGSM-JA from the hub (juletxara/mgsm)
    {"source": "mgsm", "lang": "ja", "path": MGSM_JA_TSV}        # ... or the project's vendored copy
    {"source": "hf", "dataset": "juletxara/mgsm", "name": "ja", "split": "test"}
    {"source": "hf", "dataset": "SakanaAI/gsm8k-ja-test_250-1319", "split": "test"}  # the paper's search set
    {"source": "zoo", "task": "ja_math", "split": "search", "limit": 64}
    {"source": "ja_vg_vqa", "path": "JA-VG-VQA-500/data/test-00000-of-00001.parquet"}  # VQA: dicts
    "/data/gsm8k_ja_250-1318.jsonl"        # a local file: .tsv, or .jsonl/.json/.csv/.parquet
                                           # with the columns question and answer_number

    items = load_split("search", spec)          # list[(question, answer)] or list[VQAItem], never empty
    # (`objective.test` may also name several specs, one test set each: evo_core.table_splits)
    check_disjoint({"search": items, "test": test_items})   # either kind of item

The split-isolation check (check_disjoint, overlap_keys): no two splits may share an item, where
text items are the same by their normalised question, and visual-QA items by their image (the
source's image id, or the same pixels), whichever question they ask of it.
"""
from __future__ import annotations

import hashlib
import inspect
import re
import unicodedata
from pathlib import Path
from typing import Any, Callable, Mapping

from evo_core import Registry

Item = tuple[str, str]  # (question, gold answer as written in the data)
VQAItem = dict[str, Any]  # {"image": PIL.Image.Image (RGB), "question": str, "answer": str, "image_id": str | None}

SOURCES: Registry[Callable[..., list[Item] | list[VQAItem]]] = Registry("data source")

# MGSM-JA, the paper's test set, vendored (data/mgsm/README.md: source, licence, checksum)
MGSM_JA_TSV = Path(__file__).parent / "data" / "mgsm" / "mgsm_ja.tsv"


@SOURCES.register("tsv")
def load_tsv(*, path: str | Path) -> list[Item]:
    """MGSM's format: one `question<TAB>answer` per line (the answer after the last TAB)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = data[:err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{lineno}: not UTF-8 (byte {data[err.start]:#04x}); re-save the file as "
                         f"UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    items = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise ValueError(f"{path}:{lineno}: row has no TAB (expected question<TAB>answer)")
        question, answer = line.rsplit("\t", 1)
        items.append((question.strip(), answer.strip()))
    return items


@SOURCES.register("mgsm")
def load_mgsm(*, lang: str = "ja", dataset: str = "juletxara/mgsm", path: str | Path | None = None) -> list[Item]:
    """MGSM in one language: `path`, a local copy of the benchmark's `mgsm_<lang>.tsv` (the
    project ships MGSM-JA's, MGSM_JA_TSV), or, with path=None, that file of the hub dataset the
    paper's evaluation loads (juletxara/mgsm), fetched once into the HF cache."""
    if path is not None:
        return load_tsv(path=path)
    import huggingface_hub

    filename = f"mgsm_{lang}.tsv"
    try:
        local = huggingface_hub.hf_hub_download(dataset, filename, repo_type="dataset")
    except Exception as err:  # offline, unknown repo or file
        raise FileNotFoundError(
            f"dataset {dataset!r} file {filename!r} cannot be fetched ({type(err).__name__}); download it "
            f"(hf download {dataset} {filename} --repo-type dataset --local-dir DIR) and set path=DIR/{filename}"
        ) from None
    return load_tsv(path=local)


@SOURCES.register("hf")
def load_hf(
    *,
    dataset: str,
    split: str,
    name: str | None = None,
    data_files: Any = None,
    cache_dir: str | None = None,
    question_field: str = "question",
    answer_field: str = "answer_number",
) -> list[Item]:
    """A `datasets` dataset (hub name or local builder such as "json" with data_files).

    GSM8K-style answers ("...reasoning... #### 42") keep only the part after "####".
    """
    import datasets  # heavy import, only for users of this source

    try:
        ds = datasets.load_dataset(dataset, name, split=split, data_files=data_files, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError):  # ours (not found, empty) and `datasets`' own one-line ones
        raise
    except Exception as err:  # DatasetGenerationError and the like wrap a parse error of the file
        cause = err.__cause__ or err
        raise ValueError(f"dataset {dataset!r} ({data_files or name or split}): cannot read it "
                         f"({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})") from None
    for field in (question_field, answer_field):
        if field not in ds.column_names:
            raise ValueError(f"dataset {dataset!r} has no column {field!r}; columns: {ds.column_names}")
    items = []
    for i, (question, answer) in enumerate(zip(ds[question_field], ds[answer_field])):
        if question is None or answer is None:
            raise ValueError(f"dataset {dataset!r} row {i}: empty {question_field!r} or {answer_field!r}")
        items.append((str(question).strip(), str(answer).split("####")[-1].strip()))
    return items


_TABLE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}  # `datasets` builders


def split_spec(split: str, spec: Mapping[str, Any] | str) -> Mapping[str, Any]:
    """The dict form of a split spec; a string is a local file, read by its suffix."""
    if isinstance(spec, str):
        suffix = Path(spec).suffix.lower()
        if suffix != ".tsv" and suffix not in _TABLE_BUILDERS:
            raise ValueError(f"split {split!r}: a data file must end in .tsv, {', '.join(_TABLE_BUILDERS)}; "
                             f"got {spec!r}")
        if not Path(spec).is_file():
            raise FileNotFoundError(f"split {split!r}: data file not found: {spec}")
        if Path(spec).stat().st_size == 0:
            raise ValueError(f"split {split!r}: data file {spec} is empty")
        if suffix == ".tsv":
            return {"source": "tsv", "path": spec}
        return {"source": "hf", "dataset": _TABLE_BUILDERS[suffix], "data_files": spec, "split": "train"}
    if not isinstance(spec, Mapping) or "source" not in spec:
        raise ValueError(f"split {split!r}: spec must be a file path or a dict with a 'source' key, got {spec!r}")
    return spec


def load_split(split: str, spec: Mapping[str, Any] | str) -> list[Item] | list[VQAItem]:
    """Load one split's items; a clear one-line error for a bad spec or empty data."""
    spec = split_spec(split, spec)
    kwargs = {k: v for k, v in spec.items() if k not in ("source", "limit")}
    loader = SOURCES.get(spec["source"])
    try:
        inspect.signature(loader).bind(**kwargs)
    except TypeError as err:
        raise ValueError(f"split {split!r} (source {spec['source']!r}): {err}") from None
    items = loader(**kwargs)
    limit = spec.get("limit")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"split {split!r}: limit must be a positive integer, got {limit!r}")
        items = items[:limit]
    if not items:
        raise ValueError(f"split {split!r} has 0 items (spec {dict(spec)})")
    return items


# invisible characters that copies of one problem differ by: zero-width space, (non-)joiner, word
# joiner, and the byte-order mark a file's first question often starts with; NFKC keeps them all
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


def question_key(question: str) -> str:
    """Identity of a problem across splits: NFKC, invisible characters dropped, whitespace
    collapsed, lowercase, hashed."""
    text = unicodedata.normalize("NFKC", question).translate(_INVISIBLE)
    text = re.sub(r"\s+", " ", text).strip().lower()
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def image_key(image: Any) -> str:
    """Identity of an image: a hash of its mode, size and decoded pixels (so the same picture
    saved twice, or re-encoded losslessly, is the same image)."""
    digest = hashlib.sha1(f"{image.mode} {image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def overlap_keys(item: Item | VQAItem) -> list[str]:
    """What makes two items of different splits the same item (they overlap when they share a key).

    A text item: its normalised question (question_key). A visual-QA item: its image, by the
    source's image id when it has one (JA-VG-VQA's Visual Genome `image_id`, JA-VLM-Bench-In-the-
    Wild's `image_url`) and by its pixels (image_key, so a copy under another id or none is caught
    too). The question does not count for a VQA item: the same image with another question is the
    same item (a search item showing a test image leaks that test example), and the same question
    about another image is another item (Visual Genome asks "何色ですか?" of thousands of images).
    A dict item without an image is a text item."""
    question, image = (item["question"], item.get("image")) if isinstance(item, Mapping) else (item[0], None)
    if image is None:
        return [f"question {question_key(question)}"]
    image_id = item.get("image_id")
    return ([f"image id {image_id}"] if image_id is not None else []) + [f"pixels {image_key(image)}"]


def _example(item: Item | VQAItem, key: str) -> str:
    """How an error names a shared item: its image id or its question."""
    question = item["question"] if isinstance(item, Mapping) else item[0]
    if key.startswith("image id "):
        return f"image {key.removeprefix('image id ')} ({question[:40]!r})"
    return repr(question[:80]) if key.startswith("question ") else f"the image of {question[:80]!r}"


def check_disjoint(splits: Mapping[str, list[Item] | list[VQAItem]]) -> None:
    """Raise, in one line naming the two splits, how many items of the second overlap the first and
    an example, if any two splits share an item by overlap_keys: for text, the normalised question;
    for visual QA, the image (its id or its pixels), whatever the questions (search must never see a
    test item). The objective calls it unless allow_overlap=True."""
    names = list(splits)
    keys = {name: [overlap_keys(item) for item in splits[name]] for name in names}
    for i, a in enumerate(names):
        seen = {key for item_keys in keys[a] for key in item_keys}
        for b in names[i + 1:]:
            shared = [(item, next(k for k in item_keys if k in seen))
                      for item, item_keys in zip(splits[b], keys[b]) if not seen.isdisjoint(item_keys)]
            if shared:
                raise ValueError(
                    f"splits {a!r} and {b!r} share {len(shared)} problem(s), e.g. {_example(*shared[0])}; "
                    "pass allow_overlap=True only if that is intended"
                )
