"""Answer extraction: the last number in a model output, and gold numbers.

    extract_last_number("なので、答えは 2,125 です。")   # Decimal("2125")
    extract_last_number("It is -4, not 3.5")            # Decimal("3.5")
    parse_number("114,200")                             # Decimal("114200")

Text is NFKC-normalised first, so full-width digits and commas (２，１２５) count too. A run of
digits with comma-grouped thousands ("1,000", "114,200") is one number; other commas separate
numbers ("1,2,3" -> 1, 2, 3; "1,0000" is not a grouping). Sakana's regex (\\d*\\.?\\d+) read
"1,000" as 000. A minus sign counts only when it does not follow a digit ("5-4" -> 5, 4).
Decimals compare exactly ("3.50" == "3.5"), so no float rounding decides a match.
"""
from __future__ import annotations

import re
import unicodedata
from decimal import Decimal

_NUMBER = re.compile(r"(?<![\d.])([-\u2212]?)(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(\.\d+)?")


def _to_decimal(sign: str, digits: str, fraction: str) -> Decimal:
    return Decimal(("-" if sign else "") + digits.replace(",", "") + fraction)


def extract_last_number(text: str) -> Decimal | None:
    matches = _NUMBER.findall(unicodedata.normalize("NFKC", text))
    return _to_decimal(*matches[-1]) if matches else None


def parse_number(text: str) -> Decimal:
    """A gold answer: the whole string must be one number (commas as thousands separators)."""
    clean = unicodedata.normalize("NFKC", text).strip()
    match = _NUMBER.fullmatch(clean)
    if match is None:
        raise ValueError(f"gold answer {text!r} is not a number")
    return _to_decimal(*match.groups(default=""))
