"""Writes data/released_vqa_cases.json: what the paper's released VQA scoring gives, computed under
the versions its poetry.lock pins (emoji 2.10.1, neologdn 0.5.2), for tests/objectives/test_rouge.py.

    python3.11 -m venv /tmp/released && /tmp/released/bin/pip install emoji==2.10.1 neologdn==0.5.2 \
        fugashi==1.5.2 unidic-lite==1.0.8 rouge-score==0.1.2
    /tmp/released/bin/python tests/objectives/make_released_vqa_cases.py          # writes the file
    /tmp/other/bin/python tests/objectives/make_released_vqa_cases.py --compare   # another venv: what changes

neologdn 0.5.2 builds from its sdist on Python <= 3.11 only (needs a C++ compiler). Independent of
objectives/_rouge.py on purpose: the scoring below is written from the released evaluation's
description (SakanaAI/evolutionary-model-merge, evomerge/eval/metrics.py: characters emoji.is_emoji
flags removed, then five emoji code-point ranges, then neologdn.normalize, whitespace collapsed;
rouge-score's RougeScorer(["rouge1", "rouge2", "rougeL"]) on fugashi -Owakati words; scores are
score(reference, prediction)), and uses the real packages.
"""
from __future__ import annotations

import itertools
import json
import random
import re
import sys
from pathlib import Path

OUT = Path(__file__).parent / "data" / "released_vqa_cases.json"

# code points the released code's ranges cover: emoticons, pictographs, transport, flags, dingbats
RANGES = re.compile("[\U0001F600-\U0001F64F\U0001F300-\U0001F5FF\U0001F680-\U0001F6FF\U0001F1E0-\U0001F1FF"
                    "\u2702-\u27B0]+")

# characters whose scoring depends on the versions, and a few that must not
SPECIAL = {
    "face with bags under eyes (Emoji 16.0)": "\U0001FAE9",
    "fingerprint (Emoji 16.0)": "\U0001FAC6",
    "leafless tree (Emoji 16.0)": "\U0001FABE",
    "root vegetable (Emoji 16.0)": "\U0001FADC",
    "harp (Emoji 16.0)": "\U0001FA89",
    "shovel (Emoji 16.0)": "\U0001FA8F",
    "splatter (Emoji 16.0)": "\U0001FADF",
    "U+1FAEA (Emoji 17.0)": "\U0001FAEA",
    "U+1FAC8 (Emoji 17.0)": "\U0001FAC8",
    "U+1FA8E (Emoji 17.0)": "\U0001FA8E",
    "U+1F6D8 (Emoji 17.0, inside the released ranges)": "\U0001F6D8",
    "BOM": "\ufeff",
    "left double quotation mark": "\u201c",
    "NUL": "\0",
    "long vowel after a Latin space": " ー",
    "hyphen after a Latin space": " \u2010",
    "brown mushroom (Emoji 15.1 ZWJ sequence)": "\U0001F344\u200d\U0001F7EB",
    "phoenix (Emoji 15.1 ZWJ sequence)": "\U0001F426\u200d\U0001F525",
    "grinning face (old emoji)": "\U0001F600",
    "heart suit (old emoji)": "\u2665",
}
TEMPLATES = [  # (prediction, reference) with X where a special character goes
    ("X木 です。", "木 です。"),
    ("木 です。X", "木 です。"),
    ("木 X です。", "木 です。"),
    ("木 です。", "X木 です。"),
    ("木 です。", "木 です。X"),
    ("TV Xテレビ です", "TV テレビ です"),
    ("a Xあか", "a あか"),
    ("Xa red car", "a red car"),
    ("ねこ が Xいます", "ねこ が X いません"),
]
PLAIN = [("あか です。", "あか です。"), ("あかい です。", "あか です。"), ("ねこは ２ひき です。", "ねこが 2ひき います。"),
         ("くろい いぬ と しろい くるま", "しろい くるま と くろい いぬ"), ("", "あか です。"), ("2 cats.", "ねこが 2ひき います。")]

# the normaliser alone: a sample of what the exhaustive check covered (objectives/_neologdn.py)
ALPHABET = ["a", "あ", " ", "\u3000", "~", "～", "〜", "-", "ー", "－", "ｰ", "\u201c", "\u201d", "\ufeff", "\0", "ｶ",
            "ﾞ", "ﾟ", "ﾊ", "*", '"', "Ａ", "1", "。", "\n", "\u2010", "亜", "\U0001F600"]
CODE_POINTS = [*range(0x00, 0x250), *range(0x2000, 0x2070), *range(0x2200, 0x2260), *range(0x2500, 0x2504),
               *range(0x3000, 0x3100), *range(0xFE60, 0xFE70), *range(0xFF00, 0xFFF0), 0xA5, 0x2212, 0x4E00, 0x9FFF,
               0xA000, *range(0x1FA80, 0x1FB00)]


def normalize_answer(text: str) -> str:
    import emoji
    import neologdn

    text = RANGES.sub("", "".join(ch for ch in text if not emoji.is_emoji(ch)))
    return " ".join(neologdn.normalize(text).split())


def main() -> None:
    import emoji
    import fugashi
    import neologdn
    from rouge_score import rouge_scorer

    tagger = fugashi.Tagger("-Owakati")

    class Words:
        def tokenize(self, text):
            return tagger.parse(normalize_answer(text)).split()

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=Words())
    pairs = [(name, p.replace("X", ch), r.replace("X", ch)) for name, ch in SPECIAL.items() for p, r in TEMPLATES]
    pairs += [("plain", p, r) for p, r in PLAIN]
    rouge = [[name, p, r, scorer.score(r, p)["rougeL"].fmeasure] for name, p, r in pairs]

    rng = random.Random(0)
    texts = ["".join(t) for t in itertools.product(ALPHABET, repeat=2)]
    texts += ["".join(t) for t in rng.sample(list(itertools.product(ALPHABET, repeat=4)), 1500)]
    texts += ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(5, 14))) for _ in range(1500)]
    texts += [f"{a}{chr(cp)}{b}" for cp in CODE_POINTS for a, b in (("", ""), ("a ", "あ"))]
    normalized = [[t, neologdn.normalize(t)] for t in texts]

    cases = {"versions": {"emoji": emoji.__version__, "neologdn": neologdn.__version__,
                          "python": sys.version.split()[0]},
             "rouge": rouge, "neologdn_normalize": normalized}
    if "--compare" in sys.argv:
        stored = json.loads(OUT.read_text(encoding="utf-8"))
        changed = [(a[0], a[1], a[2], a[3], b[3]) for a, b in zip(stored["rouge"], rouge) if a[3] != b[3]]
        print(f"versions {cases['versions']} vs stored {stored['versions']}: {len(changed)} of {len(rouge)} "
              f"pairs score differently; normaliser: "
              f"{sum(a != b for a, b in zip(stored['neologdn_normalize'], normalized))} of {len(texts)} differ")
        for name, p, r, old, new in changed:
            print(f"  {name}: {p!r} vs {r!r}: {old:.4f} -> {new:.4f}")
        return
    OUT.parent.mkdir(exist_ok=True)
    # one case per line (ASCII escapes: BOM, NUL and the emoji stay visible in a diff)
    body = ",\n".join(f"{json.dumps(key)}: " + (json.dumps(value) if key == "versions" else
                                                "[\n" + ",\n".join(map(json.dumps, value)) + "\n]")
                      for key, value in cases.items())
    OUT.write_text("{" + body + "}\n", encoding="utf-8")
    print(f"{OUT}: {len(rouge)} pairs, {len(normalized)} normaliser cases, {cases['versions']}")


if __name__ == "__main__":
    main()
