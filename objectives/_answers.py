"""Answer extraction for math outputs: the project's metric and the paper's, bugs included.

The project's (`acc`, `acc_ja` of "mgsm_ja"): the last number of the output, exactly.

    extract_last_number("なので、答えは 2,125 です。")   # Decimal("2125")
    extract_last_number("It is -4, not 3.5")            # Decimal("3.5")
    extract_last_number("面積は 25 m²です")               # Decimal("25"): ² is not a digit
    extract_last_number("答えは.5")                      # Decimal("0.5")
    parse_number("114,200")                             # Decimal("114200")

Each character is judged on its own, in the original text (never NFKC on the whole text, which
turns "25㎡" into "25m2" and makes the unit the answer):
- a decimal digit of any script (Unicode property `decimal`: 0-9, full-width ０-９, Arabic-Indic,
  ...) is that digit;
- a character whose NFKC form is exactly "," "." or "-" (full-width ，．－, small forms) is that
  separator, and U+2212 (−) is a minus sign;
- any other character whose NFKC form holds a digit is no digit at all: superscripts and
  subscripts (² ₃), squared/cubed units (㎡ ㎥ ㎠), circled, parenthesised and enumerated
  numbers (① ⑴ ⒈), vulgar fractions (½). They are marks next to a number, not the number.
Then: a run of digits with comma-grouped thousands ("1,000", "114,200") is one number; other
commas separate numbers ("1,2,3" -> 1, 2, 3; "1,0000" is not a grouping). A decimal point needs a
digit after it ("25." is 25, the dot ends a sentence) and may lack one before it (".5" is 0.5).
A minus sign counts only when it does not follow a digit ("5-4" -> 5, 4). Decimals compare
exactly ("3.50" == "3.5"), so no float rounding decides a match.

The paper's (`paper_acc`, `paper_acc_ja`): `paper_extract_number` and `paper_gold` reproduce
the released evaluation (SakanaAI/evolutionary-model-merge, evomerge/eval/ja_mgsm.py,
`extract_answer_number` and `compute_score`), written here from its behaviour, not copied:
the last match of "optional digits, optional point, digits", where a digit is any Unicode
decimal digit (Python's `\\d` on str), read with float(); right when it == the dataset's
`answer_number` (an int in juletxara/mgsm; int == float compares exact values, so 2125 ==
2125.0). Bugs kept on purpose, since they make the paper's number:
- commas are never part of a match, so "2,125" reads 125 and "1,000" reads 0 (the released
  `.replace(",", "")` never sees a comma);
- no minus sign: "-4" reads 4, a negative gold is never matched;
- a full-width point is no point: "３．５" reads 5; "1.2.3" reads .3;
- floats: 0.1000000000000000001 equals 0.1, and an integer above 2**53 may equal no output.
It also never reads superscripts or circled numbers (they are not decimal digits), and reads
full-width, Arabic-Indic and other decimal digits like the project does.
"""
from __future__ import annotations

import re
import unicodedata
from decimal import Decimal

# after _ascii_numerals every digit, separator and minus sign is ASCII
_NUMBER = re.compile(
    r"(?<![0-9.])(-?)(?:([0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(\.[0-9]+)?|(\.[0-9]+))"
)
_SEPARATORS = {",", ".", "-", "\u2212"}  # NFKC forms that keep their role; U+2212 is a minus sign
_NOT_A_DIGIT = "\ufffd"  # what a compatibility numeral (² ① ㎡ ...) becomes: no digit, no space


def _ascii_char(ch: str) -> str:
    digit = unicodedata.decimal(ch, None)
    if digit is not None:
        return str(digit)
    compat = unicodedata.normalize("NFKC", ch)
    if compat in _SEPARATORS:
        return "-" if compat == "\u2212" else compat
    if any(unicodedata.decimal(c, None) is not None for c in compat):
        return _NOT_A_DIGIT
    return ch


class _AsciiNumerals(dict):
    """str.translate's table: each character's reading, worked out on first sight, then looked up
    in C (an output's few thousand characters cost microseconds, not a Python call each)."""

    def __missing__(self, code: int) -> str:
        self[code] = _ascii_char(chr(code))
        return self[code]


_ASCII_NUMERALS = _AsciiNumerals({code: chr(code) for code in range(128)})


def _ascii_numerals(text: str) -> str:
    """The text with every decimal digit, separator and minus sign in ASCII and every other
    character that NFKC would turn into digits (² ① ㎡ ...) made a non-digit."""
    return text.translate(_ASCII_NUMERALS)


def _to_decimal(sign: str, digits: str, fraction: str, bare_fraction: str) -> Decimal:
    return Decimal(sign + (digits.replace(",", "") or "0") + (fraction or bare_fraction))


def extract_last_number(text: str) -> Decimal | None:
    matches = _NUMBER.findall(_ascii_numerals(text))
    return _to_decimal(*matches[-1]) if matches else None


def parse_number(text: str) -> Decimal:
    """A gold answer: the whole string must be one number (commas as thousands separators)."""
    match = _NUMBER.fullmatch(_ascii_numerals(text).strip())
    if match is None:
        raise ValueError(f"gold answer {text!r} is not a number")
    return _to_decimal(*match.groups(default=""))


# The released pattern's matches, written as "(digits and a point)? digits": the same leftmost
# matches as the released \d*\.?\d+ (tests/objectives/test_answers.py compares the two on every
# case of the released-code set). \d on a str pattern is any Unicode decimal digit.
_PAPER_NUMBER = re.compile(r"(?:\d*\.)?\d+")


def paper_extract_number(completion: str) -> float | None:
    """The released code's prediction: float() of the last match (None without one)."""
    last = None
    for last in _PAPER_NUMBER.finditer(completion):
        pass
    return None if last is None else float(last.group())


def paper_gold(gold: Decimal) -> int | float:
    """The gold as the released code holds it: the dataset's answer_number, an int for an
    integer (MGSM's are all integers) and a float otherwise."""
    return int(gold) if gold == gold.to_integral_value() else float(gold)


def paper_correct(prediction: float | None, gold: Decimal) -> bool:
    """The released comparison: answer_number == prediction (None equals no number)."""
    return prediction is not None and paper_gold(gold) == prediction
