"""Breeding and DFS scaled out on real servers (docs/scale-out.md): `python -m evo_breed` and
`python -m evo_dfs` on the zoo, each as 1 primary + 3 helpers with run dirs of their own, sharing
one PostgreSQL study and the MLflow tracking server; one helper is killed with SIGKILL at a random
moment (within or just after one of its first trials: for breeding, perhaps between a child's
COMPLETE and its offer) and started again. Budgets are tiny: the runs check the plumbing."""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from evo_breed import Archive, Member, read_log
from scale_support import check_mlflow_counts, run_workers

HELPERS = 3
BREED = "breed_toy_ja_math"
BREED_PHASES = (f"{BREED}-init", BREED)
# 5 starting models (base, 3 experts, 1 uniform merge) and 11 children into an archive of 4; the
# multi-task objective's three resources on 8 items each
BREED_ARGS = ["n_trials=16", "archive.init_merges=1", "archive.pop_size=5", "objective.search.limit=8",
              "objective.test.limit=8", "crossover.mutation_std=0.01",
              *(f"objective.options.tasks.{t}.{s}.limit=8" for t in ("en_math", "ja_qa") for s in ("search", "test"))]
RESOURCES = ("acc_ja", "en_math.acc", "ja_qa.acc")
DFS = "dfs_toy_ja_math"
DFS_ARGS = ["n_trials=12", "objective.search.limit=8", "+objective.test.limit=8"]


def servers_args(servers, database: str, experiment: str) -> tuple[str, list[str]]:
    storage = servers.database(database)
    return storage, [f"tracking.storage={storage}", f"tracking.uri={servers.mlflow_uri}",
                     f"tracking.experiment={experiment}"]


def replay(log: list[tuple[str, int]], trials: dict[tuple[str, int], optuna.trial.FrozenTrial],
           *, capacity: int) -> list[tuple[list[str], str]]:
    """The archive after each offer of `log`, replayed by evo_breed's own rule into a fresh archive
    (no weights): [(member ids, champion id)], one entry per prefix of the log, the empty one first."""
    states = [([], "")]
    with tempfile.TemporaryDirectory() as root:
        archive = Archive(Path(root), capacity=capacity, alpha=1.0)
        for phase, number in log:
            t = trials[(phase, number)]
            info = t.user_attrs["breed"]
            archive.offer(Member(id=info["id"], scores=[s for r in RESOURCES for s in t.user_attrs["item_scores"][r]],
                                 mean=t.values[0], trial=[phase, number], parents=info["parents"]), dict)
            states.append(([m.id for m in archive.members], archive.champion.id))
    return states


@pytest.mark.slow
def test_breeding_workers_share_one_archive(servers, tmp_path):
    storage, args = servers_args(servers, "breed_workers", "breed_workers")
    run = run_workers("evo_breed", tmp_path, [*args, *BREED_ARGS], helpers=HELPERS, victims=[("helper", 1)], seed=5)
    assert "| champion |" in run.outputs["primary"]
    assert sum("helper  done" in out for name, out in run.outputs.items() if name.startswith("helper")) == HELPERS

    studies = {name: optuna.load_study(study_name=name, storage=storage) for name in BREED_PHASES}
    trials = {(name, t.number): t for name, s in studies.items() for t in s.trials if t.state == TrialState.COMPLETE}
    assert not [t for s in studies.values() for t in s.trials if t.state == TrialState.RUNNING]
    # every COMPLETE trial offered exactly once, and nothing else
    log = read_log(studies[BREED])
    assert Counter(log).most_common(1)[0][1] == 1 and set(log) == set(trials), (log, sorted(trials))
    children = [t for (name, _), t in trials.items() if name == BREED]
    workers = Counter(t.user_attrs["worker"] for t in children)
    assert len(workers) >= 3, workers  # the children were bred by several workers

    # the archive every worker ends with is the replay of the log's first offers (the primary's of all)
    states = replay(log, trials, capacity=5)
    primary = json.loads((tmp_path / "primary" / "archive" / "state.json").read_text())
    assert ([m["id"] for m in primary["members"]], primary["champion"]["id"]) == states[-1]
    replicas = sorted(tmp_path.glob("helper*/archive-helper*/state.json"))
    assert len(replicas) >= HELPERS
    for path in replicas:
        saved = json.loads(path.read_text())
        n = sum(len(v) for v in saved["offered"].values())
        assert ([m["id"] for m in saved["members"]], saved["champion"]["id"]) == states[n], path
    # each child's parents were members of the archive as it stood when they were drawn
    for t in children:
        info = t.user_attrs["breed"]
        assert set(info["parents"]) <= set(states[info["after_offers"]][0]), (info, states[info["after_offers"]])
    # the champion the primary exported is the replay's
    assert f"champion {states[-1][1]} " in run.outputs["primary"]
    print(f"\nbreed workers: {run.seconds:.0f} s; killed {run.killed}; {len(log)} offers, children by worker "
          f"{sorted(workers.values())}; " + check_mlflow_counts(servers.mlflow_uri, "breed_workers", f"{BREED}-seed0",
                                                               storage, BREED_PHASES))


@pytest.mark.slow
def test_dfs_workers_on_the_servers(servers, tmp_path):
    storage, args = servers_args(servers, "dfs_workers", "dfs_workers")
    run = run_workers("evo_dfs", tmp_path, [*args, *DFS_ARGS], helpers=HELPERS, victims=[("helper", 1)], seed=7)
    assert "| best_path |" in run.outputs["primary"], run.outputs["primary"][-2000:]
    study = optuna.load_study(study_name=DFS, storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 12 <= len(finished) <= 12 + HELPERS + 1
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len({t.user_attrs["worker"] for t in study.trials if t.state == TrialState.COMPLETE}) >= 3
    assert all(t.user_attrs.get("fail_reason") for t in study.trials if t.state == TrialState.FAIL)
    assert sorted(p.parent.name for p in tmp_path.glob("*/test_table.json")) == ["primary"]
    print(f"\ndfs workers: {run.seconds:.0f} s; killed {run.killed}; " + ", ".join(
        f"{k} {v}" for k, v in Counter(t.state.name for t in study.trials).items()) + "; "
          + check_mlflow_counts(servers.mlflow_uri, "dfs_workers", f"{DFS}-seed0", storage, (DFS,)))
