from decimal import Decimal

import pytest

from objectives import extract_last_number, parse_number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("なので、答えは 2,125 です。", "2125"),
        ("So the answer is 114,200.", "114200"),
        ("1,000", "1000"),  # Sakana's regex \d*\.?\d+ reads this as 000
        ("合計は 1,234.5 円", "1234.5"),
        ("It costs 3.5 dollars.", "3.5"),
        ("The change is -4.", "-4"),
        ("x = −7", "-7"),  # U+2212 minus sign
        ("5-4 = 1", "1"),
        ("ranges 5-4", "4"),  # a hyphen after a digit is not a minus sign
        ("答えは３，０００です", "3000"),  # full-width digits and comma (NFKC)
        ("1,2,3", "3"),  # commas not grouping thousands separate numbers
        ("12,34", "34"),
        ("答えは 18.", "18"),  # sentence-final period is not a decimal point
        ("first 10 then 20 and finally 30", "30"),
        ("2,125と1,000", "1000"),
    ],
)
def test_extract_last_number(text, expected):
    assert extract_last_number(text) == Decimal(expected)


@pytest.mark.parametrize("text", ["", "答えはわかりません。", "no digits here", "-"])
def test_extract_last_number_none(text):
    assert extract_last_number(text) is None


def test_decimal_comparison_is_exact():
    assert extract_last_number("3.50") == parse_number("3.5")
    assert extract_last_number("2125") == parse_number("2,125")
    assert extract_last_number("2124.999999") != parse_number("2,125")


@pytest.mark.parametrize("gold, expected", [("2,125", "2125"), ("114,200", "114200"), ("18", "18"),
                                            (" -4 ", "-4"), ("0.5", "0.5"), ("５", "5")])
def test_parse_number(gold, expected):
    assert parse_number(gold) == Decimal(expected)


@pytest.mark.parametrize("gold", ["", "abc", "1,0000", "12 apples", "1e5", "2,125.", "NaN"])
def test_parse_number_rejects(gold):
    with pytest.raises(ValueError, match="not a number"):
        parse_number(gold)
