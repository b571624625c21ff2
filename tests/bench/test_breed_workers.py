"""bench/breed_workers.py at a tiny budget: 4 workers on one SQLite study and archive (the offers
serialised by the file lock beside study.db) finish the budget, each COMPLETE trial offered once."""
from __future__ import annotations

import json
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from bench import breed_workers as bench
from evo_breed import read_log


@pytest.mark.slow
def test_four_workers_on_sqlite_offer_every_trial_once(tmp_path):
    result = bench.run(4, evaluations=11, items=4, seed=0, out=tmp_path,
                       extra=("objective.test.limit=4", "archive.pop_size=5",
                              *(f"objective.options.tasks.{t}.test.limit=4" for t in ("en_math", "ja_qa"))))
    assert len(result["cpu"]) == 4 and result["children"] >= 11 - 5 and result["wall"] > result["children_wall"] > 0
    run_dir = tmp_path / "workers4_seed0"
    storage = f"sqlite:///{run_dir / 'study.db'}"
    studies = {name: optuna.load_study(study_name=name, storage=storage) for name in (f"{bench.STUDY}-init", bench.STUDY)}
    complete = {(name, t.number) for name, s in studies.items() for t in s.trials if t.state == TrialState.COMPLETE}
    log = read_log(studies[bench.STUDY])
    assert Counter(log).most_common(1)[0][1] == 1 and set(log) == complete
    # the helpers bred too, each into a replica of its own beside the primary's
    workers = Counter(t.user_attrs["worker"] for t in studies[bench.STUDY].trials if t.state == TrialState.COMPLETE)
    assert len(workers) >= 2, workers
    replicas = sorted(p.parent.name for p in run_dir.glob("archive*/state.json"))
    assert replicas[0] == "archive" and len(replicas) == 4, replicas
    primary = json.loads((run_dir / "archive" / "state.json").read_text())
    assert sum(len(v) for v in primary["offered"].values()) == len(log)
