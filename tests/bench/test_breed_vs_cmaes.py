"""bench/breed_vs_cmaes.py: every search gets the same number of evaluations, and its docs block
is computed from the stored table alone."""
from __future__ import annotations

from pathlib import Path

from bench import breed_vs_cmaes as bench


def test_every_search_gets_the_same_number_of_evaluations():
    run_dir = Path("/tmp/x")
    assert bench.command("m2n2", 0, 120, run_dir)[3:] == ["n_trials=120", "seed=0", f"run_dir={run_dir}",
                                                          f"tracking.mlruns_dir={run_dir / 'mlruns'}"]
    assert "archive.alpha=0" in bench.command("ga", 1, 60, run_dir) and "n_trials=60" in bench.command("ga", 1, 60, run_dir)
    gen781 = bench.command("gen781", 0, 60, run_dir)
    assert gen781[2] == "evo_breed" and "+experiment=gen781" in gen781 and "n_trials=60" in gen781
    cma = bench.command("cmaes", 2, 120, run_dir)  # = make demo: 40 uniform + 80 per-layer trials
    assert cma[2] == "evo_ps" and "space.warm_start_trials=40" in cma and "n_trials=80" in cma


def test_the_block_is_the_tables_means_spreads_and_kept_skills():
    table = {"expert math_wiz": {"en_math.acc": 0.9, "ja_qa.acc": 0.0}, "expert math_abel": {"en_math.acc": 1.0, "ja_qa.acc": 0.0},
             "expert ja": {"en_math.acc": 0.0, "ja_qa.acc": 0.8}}
    for i, search in enumerate(bench.SEARCHES):
        for seed in (0, 1, 2):
            table[f"{search} seed{seed}"] = {"ja_math.acc_ja": 0.1 * (i + seed), "en_math.acc": 0.5, "ja_qa.acc": 0.4,
                                             "evaluations": 120}
    lines = bench.render(table).splitlines()
    assert lines[0].startswith("| search (120 evaluations each) | seed 0 acc_ja | seed 1 acc_ja | seed 2 acc_ja |")
    assert lines[2] == "| M2N2 (alpha 1, attraction) | 0.0 | 10.0 | 20.0 | 10.0 (0.0-20.0) | 50% | 50% |"
    assert lines[4].startswith("| gen781 (SLERP+DELLA, children beat both parents) | 20.0 | 30.0 | 40.0 | 30.0 (20.0-40.0)")
    assert lines[5].startswith("| per-layer CMA-ES (PS, 1/3 uniform warm start) | 30.0 | 40.0 | 50.0 | 40.0 (30.0-50.0)")


def test_the_lineage_columns_sum_the_breeding_runs_over_seeds():
    table = {"expert math_wiz": {"en_math.acc": 1.0, "ja_qa.acc": 0.0}, "expert math_abel": {"en_math.acc": 1.0, "ja_qa.acc": 0.0},
             "expert ja": {"en_math.acc": 0.0, "ja_qa.acc": 1.0}}
    for seed in (0, 1):
        row = {"ja_math.acc_ja": 0.5, "en_math.acc": 0.5, "ja_qa.acc": 0.5, "evaluations": 60}
        table[f"gen781 seed{seed}"] = {**row, "children": 50 + seed, "children_entered": 5 + seed,
                                       "bred_ancestors": 4, "della_ancestors": seed}
        table[f"cmaes seed{seed}"] = row
    lines = bench.render(table, lineage=True).splitlines()
    assert lines[0].endswith("| children entering the archive | DELLA among the champion's bred ancestors |")
    assert lines[2].endswith("| 50% | 50% | 11/101 (11%) | 1/8 (12%) |")
    assert lines[3].endswith("| 50% | 50% | - | - |")  # no lineage: CMA-ES
