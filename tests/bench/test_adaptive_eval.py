"""bench/adaptive_eval.py's block: ratios, the standard error and the goals computed from the table."""
from __future__ import annotations

from bench.adaptive_eval import render


def study(tokens, acc_ja, wall=100.0):
    return {"generated_tokens": tokens, "forward_tokens": 3 * tokens, "n": tokens / 10, "trials": 120,
            "full_trials": 120, "wall_seconds": wall, "test_acc_ja": acc_ja}


def test_ratios_standard_error_and_goals():
    # full: acc_ja 0.60 and 0.70 -> mean 65.0, sd 7.07, SE 5.0; racing: 4x fewer tokens, mean 61.0 (-4.0,
    # within one SE); racing_fast: 5x fewer, mean 55.0 (-10.0, not within)
    table = {"studies": {"full_seed0": study(400_000, 0.60), "full_seed1": study(400_000, 0.70),
                         "racing_seed0": study(100_000, 0.57, wall=50), "racing_seed1": study(100_000, 0.65, wall=80),
                         "racing_fast_seed0": study(80_000, 0.55), "racing_fast_seed1": study(80_000, 0.55)},
             "loop_b": {"sample": 4, "seconds_per_trial": 5.0}}
    text = render(table)
    assert "standard error of full evaluation's mean test acc_ja is 5.0 points" in text
    racing, fast = [line for line in text.splitlines() if line.startswith("- full / racing")]
    assert "generated tokens **4.00x**" in racing and "(-4.0 points)" in racing
    assert "less generation work **met**" in racing and "one standard error **met**" in racing
    assert "generated tokens **5.00x**" in fast and "one standard error **not met**" in fast
    # loop (b): 5 s x 120 trials = 600 s, against seed 0's 100 s (full) and 50 s (racing) of wall
    assert "**scaled** to 120 trials: 10.0 min" in text
    assert "full 1.7 min (**6.0x** cheaper, not met)" in text and "racing 0.8 min (**12.0x** cheaper, met)" in text
