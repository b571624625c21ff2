"""Split specs -> items: sources, limit, bad input, isolation of splits."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from objectives import MGSM_JA_TSV, check_disjoint, load_split, question_key

ROWS = [("ねこは なんびき？", "3"), ("いぬは なんびき？", "2,125"), ("とりは？", "7")]


def test_tsv_source(write_tsv):
    path = write_tsv(ROWS + [""])  # a trailing blank line is fine
    assert load_split("search", {"source": "tsv", "path": str(path)}) == ROWS
    assert load_split("search", {"source": "tsv", "path": path, "limit": 2}) == ROWS[:2]


def test_real_mgsm_tsv(mgsm_ja_tsv):
    items = load_split("test", {"source": "tsv", "path": mgsm_ja_tsv})
    assert len(items) == 250
    assert items[0][1] == "18" and items[0][0].startswith("ジャネット")
    assert sum("," in answer for _, answer in items) == 4


def test_vendored_mgsm_is_the_recorded_file():
    # the copy the project ships is the benchmark's file, byte for byte (its README records the hash)
    digest = hashlib.sha256(MGSM_JA_TSV.read_bytes()).hexdigest()
    assert digest in (MGSM_JA_TSV.parent / "README.md").read_text(encoding="utf-8")
    assert (MGSM_JA_TSV.parent / "LICENSE").read_text().startswith("Creative Commons Attribution 4.0")
    assert load_split("test", {"source": "mgsm", "lang": "ja", "path": MGSM_JA_TSV}) == \
        load_split("test", {"source": "tsv", "path": MGSM_JA_TSV})


def _hub_cache(root: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A Hugging Face hub cache holding `files` of dataset `repo` at one revision, as
    hf_hub_download leaves it (refs/main -> snapshots/<commit>/<file>)."""
    commit = "0" * 40
    repo_dir = root / f"datasets--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for name, data in files.items():
        (repo_dir / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        (repo_dir / "snapshots" / commit / name).write_bytes(data)
    return root


def test_mgsm_source_reads_the_hub_dataset(tmp_path, monkeypatch):
    # path=None: the hub dataset's mgsm_ja.tsv through hf_hub_download, here from a local cache
    # with the hub switched off (the same code a GPU user runs online)
    cache = _hub_cache(tmp_path / "hub", "juletxara/mgsm", {"mgsm_ja.tsv": MGSM_JA_TSV.read_bytes()})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    items = load_split("test", {"source": "mgsm", "lang": "ja", "dataset": "juletxara/mgsm", "path": None})
    assert items == load_split("test", {"source": "tsv", "path": MGSM_JA_TSV})
    with pytest.raises(FileNotFoundError, match=r"'mgsm_en.tsv' cannot be fetched .*hf download juletxara/mgsm"):
        load_split("test", {"source": "mgsm", "lang": "en", "path": None})


def test_nothing_reads_outside_the_repository():
    # a user clones the repo alone: no config, test or code may read the workplace's ../shared
    root = Path(__file__).resolve().parents[2]
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.yaml", "*.yml", "*.toml", "Makefile", ".ci/*"],
                             cwd=root, capture_output=True, text=True, check=True).stdout.split()
    offenders = [f for f in tracked if f != "tests/objectives/test_data.py"
                 and "../shared" in (root / f).read_text(encoding="utf-8")]
    assert tracked and not offenders, offenders


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_split("search", {"source": "tsv", "path": tmp_path / "nope.tsv"})


def test_row_without_tab(write_tsv):
    path = write_tsv(["q1\t1", "a row with no tab", "q3\t3"])
    with pytest.raises(ValueError, match=r"data.tsv:2: row has no TAB"):
        load_split("search", {"source": "tsv", "path": path})


def test_empty_dataset(write_tsv):
    with pytest.raises(ValueError, match="0 items"):
        load_split("search", {"source": "tsv", "path": write_tsv([])})


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"source": "csv", "path": "x"}, "unknown data source 'csv'; known: hf, ja_vg_vqa, ja_vlm_wild, mgsm, tsv, zoo"),
        ({"path": "x"}, "'source' key"),
        ({"source": "tsv"}, "missing a required argument: 'path'"),
        ({"source": "tsv", "path": "x", "limt": 3}, "unexpected keyword argument 'limt'"),
        ({"source": "tsv", "path": "x", "limit": 0}, "limit must be a positive integer"),
    ],
)
def test_bad_specs(spec, message, write_tsv):
    if spec.get("path") == "x":
        spec = {**spec, "path": write_tsv(ROWS)}
    with pytest.raises(ValueError, match=message):
        load_split("search", spec)


def test_zoo_source(monkeypatch):
    from zoo import world

    calls = []

    def task_items(task, split):
        calls.append((task, split))
        return [("1+1=?", "2"), ("2+3=?", "5")]

    monkeypatch.setattr(world, "task_items", task_items)
    spec = {"source": "zoo", "task": "en_math", "split": "search", "limit": 1}
    assert load_split("search", spec) == [("1+1=?", "2")]
    assert calls == [("en_math", "search")]


def test_hf_source_on_local_json(tmp_path):
    """The real `datasets` loading code, on a local JSON file instead of the hub."""
    path = tmp_path / "mgsm.jsonl"
    rows = [{"question": "q1", "answer_number": 18, "answer": None},
            {"question": "q2", "answer_number": 2125, "answer": "reasoning ... #### 2,125"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = {"source": "hf", "dataset": "json", "data_files": str(path), "split": "train",
            "cache_dir": str(tmp_path / "cache")}
    assert load_split("test", spec) == [("q1", "18"), ("q2", "2125")]
    with pytest.raises(ValueError, match="row 0: empty"):
        load_split("test", {**spec, "answer_field": "answer"})  # MGSM's CoT column is empty in test
    with pytest.raises(ValueError, match="no column 'problem'"):
        load_split("test", {**spec, "question_field": "problem"})


def test_a_local_file_path_is_a_spec(tmp_path, write_tsv, monkeypatch):
    # `objective.search=/data/x.jsonl` on the command line: the file's suffix picks the reader
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    rows = [{"question": q, "answer_number": a} for q, a in ROWS]
    jsonl, csv = tmp_path / "search.jsonl", tmp_path / "search.csv"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    csv.write_text("question,answer_number\n" + "".join(f'{q},"{a}"\n' for q, a in ROWS), encoding="utf-8")
    for path in (write_tsv(ROWS), jsonl, csv):
        assert load_split("search", str(path)) == ROWS, path
    with pytest.raises(ValueError, match=r"split 'search': a data file must end in \.tsv, \.jsonl"):
        load_split("search", str(tmp_path / "search.txt"))
    with pytest.raises(FileNotFoundError, match="split 'test': data file not found: .*missing.jsonl"):
        load_split("test", str(tmp_path / "missing.jsonl"))


def test_question_key_normalises():
    assert question_key("  Ｔｏｍ　has\n3 apples ") == question_key("tom has 3 APPLES")
    assert question_key("tom has 3 apples") != question_key("tom has 4 apples")


def test_check_disjoint():
    a = [("Tom has 3 apples.", "3"), ("x", "1")]
    b = [("tom  has 3 APPLES.", "3"), ("y", "2"), ("x", "9")]
    with pytest.raises(ValueError, match=r"splits 'search' and 'test' share 2 problem\(s\), e.g."):
        check_disjoint({"search": a, "test": b})
    check_disjoint({"search": a, "test": [("y", "2")]})
