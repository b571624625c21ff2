"""Split specs -> items: sources, limit, bad input, isolation of splits."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path

import pytest
from PIL import Image

import objectives
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
        ({"source": "csv", "path": "x"}, "unknown data source 'csv'; known: hf, ja_vg_vqa, ja_vlm_wild, mgsm, (.+, )?tsv, zoo"),
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


# -- split isolation for visual-QA items: an image is one item, whatever is asked of it ---------------
def vqa(color, question, image_id=None, answer="あか です。"):
    return {"image": Image.new("RGB", (8, 8), color), "question": question, "answer": answer, "image_id": image_id}


def overlap_error(search, test) -> str:
    with pytest.raises(ValueError) as err:
        check_disjoint({"search": search, "test": test})
    assert "\n" not in str(err.value)
    return str(err.value)


def test_vqa_items_sharing_an_image_id_are_refused_whatever_their_pixels_and_question():
    search = [vqa("red", "くるまは なにいろ?", "visual_genome:7"), vqa("blue", "そらは?", "visual_genome:8")]
    line = overlap_error(search, [vqa("green", "ねこは なんびき?", "visual_genome:7")])
    assert line == ("splits 'search' and 'test' share 1 problem(s), e.g. image visual_genome:7 ('ねこは なんびき?'); "
                    "pass allow_overlap=True only if that is intended")


def test_vqa_items_with_the_same_pixels_are_refused_under_other_ids_or_none():
    search = [vqa("red", "くるまは なにいろ?", "visual_genome:7"), vqa("blue", "そらは?")]
    test = [vqa("red", "ねこは?", "https://example.org/cat.jpg"), vqa("blue", "うみは?"), vqa("white", "ゆきは?")]
    assert overlap_error(search, test).startswith(
        "splits 'search' and 'test' share 2 problem(s), e.g. the image of 'ねこは?';")


def test_vqa_items_asking_the_same_question_of_other_images_are_distinct():
    search = [vqa("red", "なにいろ ですか?", "visual_genome:7"), vqa("blue", "なにいろ ですか?")]
    check_disjoint({"search": search, "test": [vqa("green", " なにいろ  ですか? ", "visual_genome:9"),
                                               vqa("white", "なにいろ ですか?")]})


def test_text_items_stay_the_same_item_by_their_question():
    # a VQA-style dict without an image (the zoo's ja_count_text) is a text item
    line = overlap_error([("Tom has 3 apples.", "3")], [{"image": None, "question": "tom has 3 APPLES.", "answer": "3"}])
    assert "share 1 problem(s), e.g. 'tom has 3 APPLES.'" in line
    check_disjoint({"search": [("Tom has 3 apples.", "3")], "test": [("Tom has 4 apples.", "4")]})


def test_every_pair_of_splits_is_checked():
    splits = {"search": [vqa("red", "a", "visual_genome:1")], "test.a": [vqa("blue", "b", "visual_genome:2")],
              "test.b": [vqa("green", "c", "visual_genome:2")]}
    with pytest.raises(ValueError, match=r"^splits 'test.a' and 'test.b' share 1 problem\(s\), e.g. image visual_genome:2"):
        check_disjoint(splits)


def png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def write_vg(path, rows):
    """JA-VG-VQA-500's layout: (image_id, colour, question) per row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"image_id": image_id, "image": {"bytes": png(color), "path": None},
                                          "qas": [{"question": q, "answer": "あか です。"}]}
                                         for image_id, color, q in rows]), path)
    return {"source": "ja_vg_vqa", "path": str(path)}


def test_the_vqa_sources_give_their_image_ids(tmp_path):
    [vg] = load_split("search", write_vg(tmp_path / "vg.parquet", [(2341, "red", "q")]))
    assert vg["image_id"] == "visual_genome:2341"
    (tmp_path / "a.png").write_bytes(png("red"))
    wild = tmp_path / "wild.jsonl"
    wild.write_text(json.dumps({"image": "a.png", "image_url": "https://example.org/a.jpg", "page_url": "p",
                                "question": "q", "answer": "a"}) + "\n" + json.dumps(
        {"image": "a.png", "question": "q", "answer": "a"}) + "\n")
    assert [i["image_id"] for i in load_split("test", {"source": "ja_vlm_wild", "path": str(wild)})] == [
        "https://example.org/a.jpg", None]


def test_the_vqa_objective_refuses_overlap_unless_allowed(tmp_path, tiny_vlm_dirs):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm_dirs["vlm"])
    splits = {"search": write_vg(tmp_path / "train.parquet", [(1, "red", "くるまは?"), (2, "blue", "そらは?")]),
              "test": write_vg(tmp_path / "test.parquet", [(3, "green", "くさは?"), (2, "white", "ゆきは?")])}
    kwargs = dict(tokenizer=processor.tokenizer, processor=processor, splits=splits, language_detector="script",
                  prompt_template="<image>Q: {question}\nA:")
    with pytest.raises(ValueError, match=r"^splits 'search' and 'test' share 1 problem\(s\), e.g. image "
                                         r"visual_genome:2 \('ゆきは\?'\); pass allow_overlap=True"):
        objectives.build("ja_vqa", **kwargs)
    assert objectives.build("ja_vqa", allow_overlap=True, **kwargs).n_items("test") == 2
