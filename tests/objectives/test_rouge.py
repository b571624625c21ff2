"""Japanese VQA scoring (ROUGE-L on MeCab tokens, the JA gate, normalisation), the VQA data
readers on small files written here, the VQA split-isolation check and the paper's VQA prompt."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from objectives import (
    EVOVLM_JA_PROMPT_TEMPLATE,
    language_detector,
    load_split,
    mecab_tokenizer,
    normalize_text,
    rouge_l,
    vqa_item_scores,
    VQAScorer,
)
from objectives._prompts import fill, resolve_template


# -- normalisation -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, normalised",
    [
        ("あか です😀", "あかです"),                 # emoji (emoji.is_emoji)
        ("くるま🚗 と 👍🏽 ✂", "くるまと"),           # pictographs, a skin-tone modifier, dingbats
        ("ＡＢＣ１２３", "ABC123"),                   # full-width ASCII -> half-width (neologdn)
        ("ｶﾒﾗ", "カメラ"),                            # half-width katakana -> full-width
        ("２ひき", "2ひき"),
        ("ね　こ が  いる", "ねこがいる"),            # no spaces between Japanese characters
        ("  a   red \n car\t", "a red car"),          # whitespace collapsed, stripped; Latin keeps one
        ("すごーーーい～", "すごーい"),               # long vowels collapsed, tilde removed
    ],
)
def test_normalize_text(text, normalised):
    assert normalize_text(text) == normalised


def test_tokenizer_is_mecab_on_normalised_text():
    tok = mecab_tokenizer()
    assert tok is mecab_tokenizer()  # built once
    assert tok.tokenize("ねこが ２ひき います。") == ("ねこ", "が", "2", "ひき", "い", "ます", "。")
    assert tok.tokenize("The car is red.") == ("The", "car", "is", "red", ".")


# -- ROUGE-L, computed by hand ---------------------------------------------------------------------
def test_rouge_l_by_hand():
    # ref あか|です|。 (3), pred あかい|です|。 (3): LCS です,。 = 2; P = R = 2/3, F = 2/3
    assert rouge_l("あかい です。", "あか です。") == pytest.approx(2 / 3)
    # ref ねこ|が|2|ひき|い|ます|。 (7), pred ねこ|は|2|ひき|です|。 (6): LCS ねこ,2,ひき,。 = 4;
    # P = 4/6, R = 4/7, F = 2PR/(P+R) = (16/21)/(26/21) = 8/13 (the full-width ２ matches 2)
    assert rouge_l("ねこは ２ひき です。", "ねこが 2ひき います。") == pytest.approx(8 / 13)
    # a subsequence, not a bag: ref しろい|くるま|と|くろい|いぬ, pred くろい|いぬ|と|しろい|くるま,
    # LCS = 2 (しろい,くるま), P = R = 2/5, F = 0.4 (ROUGE-1 would be 1.0)
    assert rouge_l("くろい いぬ と しろい くるま", "しろい くるま と くろい いぬ") == pytest.approx(0.4)
    assert rouge_l("あか です。", "あか です。") == 1.0
    assert rouge_l("あか です。😀", "あか です。") == 1.0  # the emoji is gone before tokenizing
    assert rouge_l("", "あか です。") == 0.0
    assert rouge_l("😀", "あか です。") == 0.0  # nothing left after normalisation


def test_rouge_l_f_measure_is_symmetric():
    # あか (1) vs あか|です|。 (3): LCS 1; P, R = 1, 1/3 one way and 1/3, 1 the other; F = 0.5 both ways
    assert rouge_l("あか", "あか です。") == rouge_l("あか です。", "あか") == pytest.approx(0.5)


# -- the JA gate ------------------------------------------------------------------------------------
def test_ja_gate_with_fasttext():
    ja = language_detector("fasttext")
    predictions = ["2 cats.", "2 cats.", "あか です。", "ねこは ２ひき です。"]
    references = ["ねこが 2ひき います。", "2 cats.", "red.", "ねこが 2ひき います。"]
    scores = vqa_item_scores(predictions, references, ja_probability=ja)
    # 1: ref 7 tokens, pred 2|cats|. (3): LCS "2" = 1; P = 1/3, R = 1/7, F = (2/21)/(10/21) = 0.2,
    #    but the reference is Japanese and the prediction English: rougeL_ja = 0
    # 2: English reference: never gated; 3: a Japanese prediction to an English reference: scored
    # as it is (0 here: no common token); 4: Japanese both: rougeL_ja = rougeL = 8/13
    assert scores["rougeL"] == pytest.approx([0.2, 1.0, 0.0, 8 / 13])
    assert scores["rougeL_ja"] == pytest.approx([0.0, 1.0, 0.0, 8 / 13])


def test_ja_gate_threshold_is_inclusive():
    # the paper's rule: Japanese when P(ja) >= 0.5, for the reference and for the prediction
    probabilities = {"あか です。": 0.5, "あか です": 0.49, "あか": 0.5}
    scorer = VQAScorer(["あか です。"], ja_probability=probabilities.__getitem__)
    assert scorer.reference_is_ja == [True]
    assert scorer.item_scores(["あか"])["rougeL_ja"] == pytest.approx([0.5])    # 0.5: Japanese
    # あか|です vs あか|です|。: LCS 2, P = 1, R = 2/3, F = 0.8; but 0.49 < 0.5: gated
    assert scorer.item_scores(["あか です"]) == {"rougeL": pytest.approx([0.8]), "rougeL_ja": [0.0]}


def test_vqa_scorer_judges_references_once():
    calls = []

    def ja_probability(text):
        calls.append(text)
        return 1.0

    scorer = VQAScorer(["あか です。", "しろ です。"], ja_probability=ja_probability)
    assert calls == ["あか です。", "しろ です。"]
    calls.clear()
    scorer.item_scores(["あか", "しろ"])
    assert calls == ["あか", "しろ"]  # per trial, only the predictions
    with pytest.raises(ValueError, match="1 predictions for 2 references"):
        scorer.item_scores(["あか"])


# -- data readers ---------------------------------------------------------------------------------
def png(color, size=(8, 8), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


VG_ROWS = [  # JA-VG-VQA-500's columns (a subset of qas' fields is enough)
    {"image_id": 1, "url": "u1", "qas": [{"qa_id": 10, "question": "くるまは なにいろ ですか?", "answer": "あか です。"},
                                         {"qa_id": 11, "question": "なんだい ありますか?", "answer": "1だい"}],
     "image": {"bytes": png("red"), "path": "1.jpg"}},
    {"image_id": 2, "url": "u2", "qas": [{"qa_id": 20, "question": " ねこは なんびき? ", "answer": "2ひき"}],
     "image": {"bytes": png(128, mode="L"), "path": None}},
]


def test_ja_vg_vqa_parquet_first_qa(tmp_path):
    path = write_parquet(tmp_path / "test-00000-of-00001.parquet", VG_ROWS)
    items = load_split("search", {"source": "ja_vg_vqa", "path": str(path)})
    assert [(i["question"], i["answer"]) for i in items] == [("くるまは なにいろ ですか?", "あか です。"),
                                                           ("ねこは なんびき?", "2ひき")]
    assert all(isinstance(i["image"], Image.Image) and i["image"].mode == "RGB" for i in items)
    assert items[0]["image"].getpixel((0, 0)) == (255, 0, 0)
    assert items[1]["image"].getpixel((0, 0)) == (128, 128, 128)  # greyscale made RGB
    assert len(load_split("search", {"source": "ja_vg_vqa", "path": path, "limit": 1})) == 1


def test_ja_vg_vqa_jsonl_with_relative_image_paths(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png("blue"))
    path = tmp_path / "vg.jsonl"
    path.write_text(json.dumps({"image": "images/a.png", "qas": [{"question": "そらは?", "answer": "あお"},
                                                                 {"question": "x", "answer": "y"}]},
                               ensure_ascii=False) + "\n\n", encoding="utf-8")
    [item] = load_split("search", {"source": "ja_vg_vqa", "path": path})
    assert (item["question"], item["answer"]) == ("そらは?", "あお")
    assert item["image"].getpixel((3, 3)) == (0, 0, 255)


def test_ja_vlm_wild_parquet_and_jsonl(tmp_path):
    rows = [{"page_url": "p", "image_url": "i", "image": {"bytes": png("green"), "path": "x.jpg"},
             "question": "これは なに?", "answer": "はっぱ です。"}]
    [item] = load_split("test", {"source": "ja_vlm_wild", "path": write_parquet(tmp_path / "w.parquet", rows)})
    assert (item["question"], item["answer"]) == ("これは なに?", "はっぱ です。")
    assert item["image"].getpixel((0, 0)) == (0, 128, 0)

    (tmp_path / "g.png").write_bytes(png("green"))
    jsonl = tmp_path / "w.jsonl"
    jsonl.write_text(json.dumps({"image": {"path": "g.png"}, "question": "q", "answer": "a"}) + "\n")
    [item] = load_split("test", {"source": "ja_vlm_wild", "path": jsonl})
    assert (item["question"], item["answer"], item["image"].size) == ("q", "a", (8, 8))


def test_vqa_reader_errors(tmp_path):
    def load(source, path):
        return load_split("search", {"source": source, "path": path})

    with pytest.raises(FileNotFoundError, match="data file not found"):
        load("ja_vg_vqa", tmp_path / "nope.parquet")
    no_qas = write_parquet(tmp_path / "a.parquet", [{"image": {"bytes": png("red"), "path": None}, "question": "q"}])
    with pytest.raises(ValueError, match=r"a.parquet: no column 'qas'; columns: \['image', 'question'\]"):
        load("ja_vg_vqa", no_qas)
    with pytest.raises(ValueError, match=r"a.parquet: no column 'answer'"):
        load("ja_vlm_wild", no_qas)
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"image": "x.png", "question": "q", "answer": "a"}\n{"image": "x.png", "question": "q"}\n')
    with pytest.raises(FileNotFoundError, match=r"b.jsonl row 0: image file not found: .*x.png"):
        load("ja_vlm_wild", jsonl)
    (tmp_path / "x.png").write_bytes(png("red"))
    with pytest.raises(ValueError, match=r"b.jsonl:2: no column 'answer'"):
        load("ja_vlm_wild", jsonl)
    (tmp_path / "x.png").write_bytes(b"not a png")
    jsonl.write_text('{"image": "x.png", "question": "q", "answer": "a"}\n')
    with pytest.raises(ValueError, match=r"b.jsonl row 0: cannot read the image x.png \(UnidentifiedImageError"):
        load("ja_vlm_wild", jsonl)
    (tmp_path / "x.png").write_bytes(png("red", size=(64, 64))[:60])  # truncated
    with pytest.raises(ValueError, match=r"row 0: cannot read the image x.png"):
        load("ja_vlm_wild", jsonl)
    bad_qas = write_parquet(tmp_path / "c.parquet", [{"image": {"bytes": png("red"), "path": None},
                                                      "qas": [{"question": "q", "answer": "a"}]},
                                                     {"image": {"bytes": png("red"), "path": None}, "qas": []}])
    with pytest.raises(ValueError, match=r"c.parquet row 1: 'qas' must be a non-empty list"):
        load("ja_vg_vqa", bad_qas)
    empty = write_parquet(tmp_path / "d.parquet", [{"image": {"bytes": png("red"), "path": None},
                                                    "question": "q", "answer": None}])
    with pytest.raises(ValueError, match=r"d.parquet row 0: empty or non-text 'answer'"):
        load("ja_vlm_wild", empty)
    (tmp_path / "e.csv").write_text("x")
    with pytest.raises(ValueError, match="must end in .parquet or .jsonl"):
        load("ja_vlm_wild", tmp_path / "e.csv")
    (tmp_path / "f.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(ValueError, match="f.parquet: not a readable parquet file"):
        load("ja_vlm_wild", tmp_path / "f.parquet")


# -- the paper's VQA prompt ------------------------------------------------------------------------
def test_evovlm_ja_template():
    template = resolve_template("evovlm_ja")
    assert template == EVOVLM_JA_PROMPT_TEMPLATE
    assert fill(template, "くるまは なにいろ ですか?") == (
        "[INST] <<SYS>>\n"
        "あなたは役立つ、偏見がなく、検閲されていないアシスタントです。与えられた画像を下に、質問に答えてください。\n"
        "<</SYS>>\n\n<image>\nくるまは なにいろ ですか? [/INST]"
    )


def test_vqa_scorer_scores_a_subset_against_its_own_references():
    scorer = VQAScorer(["あか です。", "しろ です。", "くろ です。"], ja_probability=lambda text: 1.0)
    whole = scorer.item_scores(["くろ", "しろ です。", "あか"])
    # the predictions of items 2 and 0, in that order, against those items' references
    assert scorer.item_scores(["あか", "くろ"], items=[2, 0]) == {m: [s[2], s[0]] for m, s in whole.items()}
    assert scorer.item_scores(["しろ です。"], items=[1]) == {m: [s[1]] for m, s in whole.items()}
