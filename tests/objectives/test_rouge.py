"""Japanese VQA scoring (ROUGE-L on MeCab tokens, the JA gate, normalisation), the VQA data
readers on small files written here, the VQA split-isolation check and the paper's VQA prompt."""
from __future__ import annotations

import io
import json
from pathlib import Path

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
    bootstrap_mid,
)
from objectives._neologdn import normalize as neologdn_052
from objectives._rouge import EMOJI_VERSION
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


# -- equal to the released evaluation under its pinned versions (emoji 2.10.1, neologdn 0.5.2) -------
# data/released_vqa_cases.json: written by make_released_vqa_cases.py with the real emoji 2.10.1 and
# neologdn 0.5.2 (Python 3.11), independently of objectives/_rouge.py
RELEASED = json.loads((Path(__file__).parent / "data" / "released_vqa_cases.json").read_text(encoding="utf-8"))
RELEASED_PAIRS: dict[str, list] = {}
for _name, _prediction, _reference, _score in RELEASED["rouge"]:
    RELEASED_PAIRS.setdefault(_name, []).append((_prediction, _reference, _score))


def test_released_cases_were_written_under_the_pinned_versions():
    assert RELEASED["versions"]["emoji"] == "2.10.1" and RELEASED["versions"]["neologdn"] == "0.5.2"


def test_installed_emoji_is_the_pinned_release():
    import emoji

    assert emoji.__version__ == EMOJI_VERSION == "2.10.1", (
        f"emoji {emoji.__version__} installed; VQA scores need emoji=={EMOJI_VERSION}: make install")


def test_scorer_refuses_another_emoji_release(monkeypatch):
    import emoji

    from objectives import _rouge

    monkeypatch.setattr(emoji, "__version__", "2.16.0")
    _rouge._emoji.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"VQA scoring needs emoji==2\.10\.1 .*2\.16\.0 strips"):
            VQAScorer(["あか です。"], ja_probability=lambda text: 1.0)
    finally:
        monkeypatch.undo()
        _rouge._emoji.cache_clear()
    VQAScorer(["あか です。"], ja_probability=lambda text: 1.0)  # the pinned release: fine


@pytest.mark.parametrize("name", sorted(RELEASED_PAIRS))
def test_rouge_l_equals_the_released_scoring(name):
    # per case: 9 (prediction, reference) pairs with the character at the start, end or middle of
    # either side, after a Latin space, ... (make_released_vqa_cases.py TEMPLATES)
    for prediction, reference, expected in RELEASED_PAIRS[name]:
        assert rouge_l(prediction, reference) == expected, (prediction, reference)


def test_neologdn_052_equals_the_real_one():
    cases = RELEASED["neologdn_normalize"]
    assert len(cases) > 6000
    assert [neologdn_052(text) for text, _ in cases] == [normalised for _, normalised in cases]


@pytest.mark.parametrize(
    "text, normalised",
    [
        ("\ufeffあいう", "\ufeffあいう"),        # a leading BOM stays (0.5.6 strips it)
        ("\u201cあ\u201d", "\u201cあ\""),         # U+201C stays (0.5.6 makes it '"'); U+201D becomes '"'
        ("あか\0です", "あか"),                   # the text ends at a NUL (0.5.2 builds a C string)
        ("a ーあ", "a あ"),                        # a long vowel after a Latin space is lost (0.5.6 keeps it)
        ("a -あ", "a -あ"),                        # an ASCII hyphen is an ordinary character: kept
        ("ｶﾞｰﾃﾞﾝ", "ガーデン"),                    # half-width kana and voiced marks fused
        ("\U0001FABE木", "\U0001FABE木"),          # leafless tree (Emoji 16.0): neologdn leaves it
    ],
)
def test_neologdn_052_quirks(text, normalised):
    assert neologdn_052(text) == normalised


def test_emoji_16_and_bom_score_as_the_released_code():
    # 木|です|。 (3) against 🪾|木|です|。 (4): emoji 2.10.1 does not know Emoji 16.0, so the leafless
    # tree stays a token: LCS 3, P = 3/4, R = 1, F = 6/7 (emoji 2.16 would strip it: F = 1)
    for emoji_16 in ("\U0001FAE9", "\U0001FABE", "\U0001FA89", "\U0001FADF"):
        assert normalize_text(f"木 です。{emoji_16}") == f"木です。{emoji_16}"
        assert rouge_l(f"{emoji_16}木 です。", "木 です。") == pytest.approx(6 / 7)
    assert normalize_text("木 です。\U0001F600") == "木です。"  # an emoji 2.10.1 knows: removed
    # a leading BOM is a token of its own, as in neologdn 0.5.2 (0.5.6 strips it: F = 1)
    assert rouge_l("\ufeff木 です。", "木 です。") == pytest.approx(6 / 7)


# -- the paper's aggregate: rouge-score's bootstrap mid -------------------------------------------------
def released_bootstrap_mids(rouge_l_scores, rouge_l_ja_scores):
    """What the released evaluation reports (x 100 aside) for these per-item scores: numpy's global
    generator seeded 42, then rouge-score's BootstrapAggregator over rouge1, rouge2 and rougeL, once
    for the plain scores and once for the _ja ones. rouge1 and rouge2 are given other values: only
    their draws matter to rougeL's mid."""
    import numpy as np
    from rouge_score import scoring

    np.random.seed(42)
    mids = []
    for scores in (rouge_l_scores, rouge_l_ja_scores):
        aggregator = scoring.BootstrapAggregator()
        for s in scores:
            aggregator.add_scores({"rouge1": scoring.Score(1.0, 0.5, s / 2), "rouge2": scoring.Score(0.0, 1.0, 0.3),
                                   "rougeL": scoring.Score(0.5, s, s)})
        mids.append(aggregator.aggregate()["rougeL"].mid.fmeasure)
    return mids


@pytest.fixture(scope="module")
def split_scores():
    """rougeL and rougeL_ja of 186 (prediction, reference) pairs, as for a split: the released cases,
    rougeL_ja with every third item gated to 0."""
    rouge_l_scores = [score for _, _, _, score in RELEASED["rouge"]]
    return {"rougeL": rouge_l_scores, "rougeL_ja": [0.0 if i % 3 == 0 else s for i, s in enumerate(rouge_l_scores)]}


def test_bootstrap_mid_equals_rouge_scores_aggregator(split_scores):
    expected = released_bootstrap_mids(split_scores["rougeL"], split_scores["rougeL_ja"])
    ours = [bootstrap_mid(split_scores["rougeL"], preceding=2), bootstrap_mid(split_scores["rougeL_ja"], preceding=5)]
    assert ours == pytest.approx(expected, abs=1e-12)
    # not the mean: another estimate of it, within bootstrap noise
    means = [sum(s) / len(s) for s in split_scores.values()]
    assert all(0 < abs(o - m) < 0.002 for o, m in zip(ours, means)), (ours, means)
    # the draws matter: without the preceding bootstraps the resamples are others
    assert bootstrap_mid(split_scores["rougeL"]) != ours[0]


def test_vqa_objective_aggregate_option(split_scores):
    from transformers import AutoProcessor

    from objectives import VQAObjective, build
    from zoo.build_vlm import MODELS_DIR

    processor = AutoProcessor.from_pretrained(MODELS_DIR / "vlm")
    splits = {"search": {"source": "zoo", "task": "ja_vqa", "split": "search", "limit": 4}}

    def objective(**options):
        return build("ja_vqa", tokenizer=processor.tokenizer, processor=processor, splits=splits,
                     language_detector="script", **options)

    expected = released_bootstrap_mids(split_scores["rougeL"], split_scores["rougeL_ja"])
    assert objective(aggregate="bootstrap_mid").aggregate(split_scores) == {
        "rougeL": pytest.approx(expected[0], abs=1e-12), "rougeL_ja": pytest.approx(expected[1], abs=1e-12), "n": 186}
    means = {m: sum(s) / 186 for m, s in split_scores.items()} | {"n": 186}
    assert objective().aggregate(split_scores) == means  # the default
    with pytest.raises(ValueError, match="objective option aggregate='median'; known: mean, bootstrap_mid"):
        VQAObjective(aggregate="median", tokenizer=None, splits={})
