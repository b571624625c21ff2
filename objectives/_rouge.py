"""ROUGE-L for Japanese visual QA, as in the paper's released evaluation of EvoVLM-JP.

    normalize_text("ＡＢＣ 😀 ｶﾒﾗ")          # "ABC カメラ": emoji out, neologdn 0.5.2, whitespace collapsed
    rouge_l("あか です。", "あかい です。")   # rouge-score's rougeL F-measure on MeCab tokens
    vqa_item_scores(predictions, references, ja_probability=language_detector("fasttext"))
    # {"rougeL": [...], "rougeL_ja": [...]}: per item, in [0, 1]
    scorer = VQAScorer(references, ja_probability=...)   # once per split: references tokenized
    scorer.item_scores(predictions)                        # and judged Japanese once
    bootstrap_mid(scores, preceding=2)                     # the paper's aggregate of a split (below)

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
- Their library versions (poetry.lock): emoji 2.10.1 and neologdn 0.5.2, which is what the scores
  depend on. emoji is locked at 2.10.1 (requirements.lock), and checked when a scorer is built: a
  later emoji also strips the Emoji 16.0/17.0 characters (U+1FAE9 face with bags under eyes,
  U+1FABE leafless tree, U+1FA89 harp, ... 21 code points outside the blocks above) that 2.10.1
  keeps as tokens, and so scores other numbers. neologdn is not used: 0.5.2 does not build on
  Python >= 3.12 and later releases score differently (a leading BOM stripped, U+201C made '"',
  ...), so `_neologdn.py` is 0.5.2's normalize written out in Python, checked equal to the real
  0.5.2 (its docstring). tests/objectives/test_rouge.py compares with scores computed by the real
  emoji 2.10.1 + neologdn 0.5.2 (tests/objectives/make_released_vqa_cases.py): on its 186 pairs,
  97 score differently under emoji 2.16.0 + neologdn 0.5.6.
- evomerge/eval/utils.py, `compute_score`: the "_ja" variant replaces a prediction by "" when the
  reference is Japanese (fastText lid.176 P(ja) >= 0.5) and the prediction is not (P(ja) < 0.5);
  an English reference is never gated. Note >= here, where the MGSM-JA objective uses > 0.5
  (JA_THRESHOLD): we keep each evaluation's own rule.
- Their aggregate is rouge-score's `BootstrapAggregator()` "mid" F-measure x 100 over the split:
  1000 resamples of the split's items (with replacement), the median of the resample means, drawn
  from numpy's global generator, which their evaluate.py seeds with 42 (`set_seed(42)`) before
  the model loads. One `rouge_ja` call aggregates rouge1, rouge2 and rougeL in that order, and
  `compute_score` calls it twice (plain, then _ja): so rougeL is the 3rd bootstrap drawn after the
  seed and rougeL_ja the 6th. `bootstrap_mid(scores, preceding=k)` draws exactly those resamples
  (numpy's legacy RandomState(42), one `choice(n, n)` per resample, after k earlier bootstraps of
  the same size), so on the first set their run evaluates (JA-VG-VQA-500 in their config) it gives
  their number given the same per-item scores, assuming nothing else drew from numpy's global
  generator in their process (which we cannot check). A later set in the same process (their
  JA-VLM-Bench-In-the-Wild) starts from another state: there the mid is the same estimate with
  other resamples. The per-item scores are returned in [0, 1]; the objective averages them by
  default, or takes this mid (`objective.options.aggregate`, _vqa.py); x 100 gives the paper's scale.

What neologdn.normalize does (0.5.x): full-width ASCII letters, digits and symbols become
half-width ("ＡＢＣ１２３" -> "ABC123"), half-width katakana become full-width ("ｶﾒﾗ" -> "カメラ"),
hyphen- and long-vowel-like characters are unified ("ー"), repeated "ー" collapse to one, tildes
are removed, and spaces between Japanese characters (or between Japanese and Latin text) are
removed, while single spaces between Latin words stay. So "くるまは なにいろ" and "くるまはなにいろ"
score the same, and "２ひき" matches "2ひき".

Speed: MeCab tokenization is cached per distinct text (references repeat every trial), and a
VQAScorer judges its references' language once, so a trial only tokenizes and language-checks its
new predictions: about 37 ms for 300 new items of VQA length on one busy core (measured, with the
Python normaliser of _neologdn.py: about 15 us per 26-character answer).
"""
from __future__ import annotations

import functools
import re
from typing import Callable, Sequence

from ._neologdn import normalize as neologdn_052

JA_GATE = 0.5  # the paper's rule here: Japanese when P(ja) >= 0.5 (evomerge/eval/utils.py)

# the emoji blocks the paper's normaliser strips on top of emoji.is_emoji: emoticons,
# miscellaneous symbols and pictographs, transport and map symbols, regional-indicator flags,
# dingbats (U+2702-U+27B0)
_EMOJI_BLOCKS = re.compile("[\U0001F600-\U0001F64F\U0001F300-\U0001F5FF\U0001F680-\U0001F6FF"
                           "\U0001F1E0-\U0001F1FF\u2702-\u27B0]+")


EMOJI_VERSION = "2.10.1"  # the emoji release the paper's evaluation pins (its poetry.lock)

# the order of the bootstraps the released evaluation draws after seeding: per rouge_ja call rouge1,
# rouge2, rougeL; first the plain scores, then the _ja ones. Value: how many come before the metric's.
RELEASED_BOOTSTRAP_ORDER = {"rougeL": 2, "rougeL_ja": 5}
RELEASED_BOOTSTRAP_SEED = 42  # evaluate.py: set_seed(42)


@functools.cache
def _emoji():
    """The emoji module, if it is the release the paper's scores depend on (module docstring)."""
    import emoji

    if emoji.__version__ != EMOJI_VERSION:
        raise RuntimeError(f"VQA scoring needs emoji=={EMOJI_VERSION} (the paper's pinned release; "
                           f"{emoji.__version__} strips other characters): pip install emoji=={EMOJI_VERSION}")
    return emoji


def check_versions() -> None:
    """Raise, in one line, if the installed emoji is not the release the scores depend on."""
    _emoji()


def normalize_text(text: str) -> str:
    """Emoji removed, neologdn 0.5.2's normalize, whitespace collapsed and stripped (module doc)."""
    is_emoji = _emoji().is_emoji
    text = "".join(ch for ch in text if not is_emoji(ch))
    text = _EMOJI_BLOCKS.sub("", text)
    return " ".join(neologdn_052(text).split())


def bootstrap_mid(scores: Sequence[float], *, preceding: int = 0, seed: int = RELEASED_BOOTSTRAP_SEED,
                  n_samples: int = 1000) -> float:
    """rouge-score's BootstrapAggregator "mid" of per-item scores: the median, over `n_samples`
    resamples of the n items with replacement, of the resample mean. Drawn as rouge-score draws
    them, from numpy's legacy RandomState(seed) (one choice(n, n) per resample), after the draws
    of `preceding` earlier bootstraps of the same n (module docstring). Equal to rouge-score's on
    the same scores and generator state, up to float rounding in the means."""
    import numpy as np

    values = np.asarray(scores, dtype=float)
    n = len(values)
    if n == 0:
        raise ValueError("bootstrap_mid needs at least one score")
    rng = np.random.RandomState(seed)
    for _ in range(preceding * n_samples):
        rng.choice(n, size=n)
    means = [values[rng.choice(n, size=n)].mean() for _ in range(n_samples)]
    return float(np.percentile(means, 50))


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
        check_versions()  # a wrong emoji release would silently give other numbers
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
