"""ROUGE-L for Japanese visual QA, as in the paper's released evaluation of EvoVLM-JP.

    normalize_text("ＡＢＣ 😀 ｶﾒﾗ")          # "ABC カメラ": emoji out, neologdn, whitespace collapsed
    rouge_l("あか です。", "あかい です。")   # rouge-score's rougeL F-measure on MeCab tokens
    vqa_item_scores(predictions, references, ja_probability=language_detector("fasttext"))
    # {"rougeL": [...], "rougeL_ja": [...]}: per item, in [0, 1]
    scorer = VQAScorer(references, ja_probability=...)   # once per split: references tokenized
    scorer.item_scores(predictions)                        # and judged Japanese once

What we follow (SakanaAI/evolutionary-model-merge, read, not copied):
- evomerge/eval/metrics.py, `MecabTokenizer` and `rouge_ja`: rouge-score's
  `RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=MecabTokenizer())`, the tokenizer being
  fugashi's `Tagger("-Owakati")` (unidic-lite is the dictionary fugashi finds installed) applied
  to the normalised text: characters that `emoji.is_emoji` flags removed, then the code points of
  a few emoji blocks (emoticons, pictographs, transport/map, flags, dingbats U+2702-U+27B0), then
  `neologdn.normalize`, then whitespace collapsed to single spaces and stripped. Both reference
  and prediction go through it. No lower-casing or punctuation removal (their docstring says so,
  their code does not). Kept as theirs, quirk included: emoji are removed one code point at a
  time, so the joiners of a multi-part emoji (U+200D, the variation selector U+FE0F) stay and
  become tokens ("👨‍👩‍👧" leaves "\u200d\u200d"); rare in answers, and fixing it would move scores
  away from the paper's.
- evomerge/eval/utils.py, `compute_score`: the "_ja" variant replaces a prediction by "" when the
  reference is Japanese (fastText lid.176 P(ja) >= 0.5) and the prediction is not (P(ja) < 0.5);
  an English reference is never gated. Note >= here, where the MGSM-JA objective uses > 0.5
  (JA_THRESHOLD): we keep each evaluation's own rule.
- Their aggregate is rouge-score's BootstrapAggregator "mid" F-measure x 100 over the split; we
  return per-item F-measures in [0, 1] and the objective averages them (the bootstrap mid is an
  estimate of that mean), so x 100 gives the paper's scale.

What neologdn.normalize does (0.5.x): full-width ASCII letters, digits and symbols become
half-width ("ＡＢＣ１２３" -> "ABC123"), half-width katakana become full-width ("ｶﾒﾗ" -> "カメラ"),
hyphen- and long-vowel-like characters are unified ("ー"), repeated "ー" collapse to one, tildes
are removed, and spaces between Japanese characters (or between Japanese and Latin text) are
removed, while single spaces between Latin words stay. So "くるまは なにいろ" and "くるまはなにいろ"
score the same, and "２ひき" matches "2ひき".

Speed: MeCab tokenization is cached per distinct text (references repeat every trial), and a
VQAScorer judges its references' language once, so a trial only tokenizes and language-checks its
new predictions: about 30 ms for 300 items of VQA length on one busy core (measured).
"""
from __future__ import annotations

import functools
import re
from typing import Callable, Sequence

JA_GATE = 0.5  # the paper's rule here: Japanese when P(ja) >= 0.5 (evomerge/eval/utils.py)

# the emoji blocks the paper's normaliser strips on top of emoji.is_emoji: emoticons,
# miscellaneous symbols and pictographs, transport and map symbols, regional-indicator flags,
# dingbats (U+2702-U+27B0)
_EMOJI_BLOCKS = re.compile("[\U0001F600-\U0001F64F\U0001F300-\U0001F5FF\U0001F680-\U0001F6FF"
                           "\U0001F1E0-\U0001F1FF\u2702-\u27B0]+")


def normalize_text(text: str) -> str:
    """Emoji removed, neologdn.normalize, whitespace collapsed and stripped (see module doc)."""
    import emoji
    import neologdn

    text = "".join(ch for ch in text if not emoji.is_emoji(ch))
    text = _EMOJI_BLOCKS.sub("", text)
    text = neologdn.normalize(text)
    return " ".join(text.split())


class MecabTokenizer:
    """rouge-score's tokenizer interface (`tokenize(text) -> tokens`): MeCab -Owakati tokens of
    the normalised text. Tokens are cached per text (a trial re-scores the same references)."""

    def __init__(self, cache_size: int = 65536):
        import fugashi  # finds the unidic-lite dictionary

        self._tagger = fugashi.Tagger("-Owakati")
        self.tokenize = functools.lru_cache(maxsize=cache_size)(self._tokenize)

    def _tokenize(self, text: str) -> tuple[str, ...]:
        # a tuple: the cached tokens are shared by every caller, so they must not be mutable
        return tuple(self._tagger.parse(normalize_text(text)).split())


@functools.cache
def mecab_tokenizer() -> MecabTokenizer:
    """The process's one MeCab tokenizer (built on first use)."""
    return MecabTokenizer()


@functools.cache
def _rouge_l_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=mecab_tokenizer())


def rouge_l(prediction: str, reference: str) -> float:
    """rouge-score's rougeL F-measure of one prediction against its reference, in [0, 1]; 0 when
    either is empty after normalisation."""
    return _rouge_l_scorer().score(reference, prediction)["rougeL"].fmeasure


JaProbability = Callable[[str], float]


class VQAScorer:
    """Per-item rougeL and rougeL_ja of predictions against fixed references. Built once per split:
    the references' tokens and their is-Japanese decisions are computed here, not per trial."""

    def __init__(self, references: Sequence[str], *, ja_probability: JaProbability):
        self.references = [str(r) for r in references]
        self._ja_probability = ja_probability
        self.reference_is_ja = [ja_probability(r) >= JA_GATE for r in self.references]
        _rouge_l_scorer()  # imports rouge-score (about 1.5 s: nltk) now, not in the first trial
        tokenizer = mecab_tokenizer()
        for reference in self.references:
            tokenizer.tokenize(reference)  # warm the cache

    def item_scores(self, predictions: Sequence[str], items: Sequence[int] | None = None) -> dict[str, list[float]]:
        """Per prediction, against every reference in order, or against the references `items`."""
        index = range(len(self.references)) if items is None else items
        if len(predictions) != len(index):
            raise ValueError(f"{len(predictions)} predictions for {len(index)} references")
        scores: dict[str, list[float]] = {"rougeL": [], "rougeL_ja": []}
        for prediction, i in zip(predictions, index):
            reference, reference_is_ja = self.references[i], self.reference_is_ja[i]
            score = rouge_l(prediction, reference)
            scores["rougeL"].append(score)
            gated = reference_is_ja and self._ja_probability(prediction) < JA_GATE
            # a gated prediction is scored as "" (0 against a non-empty reference), as the paper does
            scores["rougeL_ja"].append(rouge_l("", reference) if gated else score)
        return scores


def vqa_item_scores(
    predictions: Sequence[str], references: Sequence[str], *, ja_probability: JaProbability
) -> dict[str, list[float]]:
    """{"rougeL": [...], "rougeL_ja": [...]} per item; rougeL_ja scores a non-Japanese prediction
    to a Japanese reference as an empty one. For repeated scoring against the same references,
    build a VQAScorer once."""
    return VQAScorer(references, ja_probability=ja_probability).item_scores(predictions)
