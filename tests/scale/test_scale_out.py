"""The scaled set-up on real servers (docs/scale-out.md): `python -m evo_ps` on the zoo as 1 primary +
3 helpers, each with a run dir of its own (as on separate machines), sharing one PostgreSQL study and
one MLflow tracking server; a helper and then the primary are killed with SIGKILL at random moments
(each within or just after one of its first trials) and started again. Then what users look at: optuna-dashboard and the MLflow UI in headless
Chromium, and the comparison chart of two studies' final tables.

One study is run per module (minutes); the tests below check it from several sides."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from evo_core._optuna_compat import study_id
from scale_support import (REPO_ROOT, check_mlflow_counts, dump_until, optuna_dashboard, run_workers, screenshot,
                           start_worker)

N_TRIALS, HELPERS, KILLS = 18, 3, 2  # room for the primary's next trial after a helper's kill
STUDY = "toy_ja_math"
PHASES = (f"{STUDY}-uniform", STUDY)  # the warm start (space.warm_start_trials=2), then per layer
EXPERIMENT = "scale_out"
SMALL = ["objective.search.limit=20", "+objective.test.limit=40", "merge=task_arithmetic", "space.warm_start_trials=2"]


@dataclass
class ScaleOut:
    storage: str
    uri: str
    root: Path
    outputs: dict[str, str] = field(default_factory=dict)  # worker name -> its output
    killed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def study(self, name: str = STUDY) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage)

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.uri)

    def runs(self) -> list:
        client = self.client()
        return client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], max_results=5000)


def worker_args(scale: ScaleOut, *extra: str) -> list[str]:
    return [f"tracking.storage={scale.storage}", f"tracking.uri={scale.uri}", f"tracking.experiment={EXPERIMENT}",
            f"n_trials={N_TRIALS}", *SMALL, *extra]


@pytest.fixture(scope="module")
def scale_out(servers, tmp_path_factory) -> ScaleOut:
    scale = ScaleOut(storage=servers.database("scale_out"), uri=servers.mlflow_uri,
                     root=tmp_path_factory.mktemp("scale_out"))
    # all four at once on the empty database and the fresh MLflow experiment; kill 1: a random
    # helper during or right after its 1st or 2nd trial; kill 2: the primary (the run's owner)
    # during or right after its next trial
    run = run_workers("evo_ps", scale.root, worker_args(scale), helpers=HELPERS, seed=13,
                      victims=[("helper", random.Random(13).randint(1, 2)), ("primary", 1)])
    scale.outputs, scale.killed, scale.seconds = run.outputs, run.killed, run.seconds
    # a second study on the same servers (another seed) for the comparison views
    proc = start_worker("evo_ps", scale.root, "seed1",
                        worker_args(scale, "seed=1", f"study_name={STUDY}_seed1", "n_trials=3"))
    assert proc.wait() == 0, (scale.root / "seed1.log").read_text()[-3000:]
    (scale.root / "summary.json").write_text(json.dumps({"killed": scale.killed, "seconds": scale.seconds}))
    return scale


@pytest.mark.slow
def test_the_scaled_study_counts_every_trial_once(scale_out):
    s = scale_out
    out = s.outputs
    assert "| best_merge |" in out["primary-restart"] and "| best_merge |" not in out["primary"]
    assert sum("helper  done" in o for n, o in out.items() if n.startswith("helper")) == HELPERS

    trials = s.study().trials
    finished = [t for t in trials if t.state.is_finished()]
    # each worker stops once the study holds N_TRIALS finished; any other worker's running trial
    # may still finish: at most one per extra worker (3 helpers + 2 restarts)
    extra_workers = HELPERS + KILLS
    assert N_TRIALS <= len(finished) <= N_TRIALS + extra_workers, Counter(t.state.name for t in trials)
    for name in PHASES:
        assert not [t.number for t in s.study(name).trials if t.state == TrialState.RUNNING], name
    points = Counter(tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE)
    assert max(points.values()) == 1, "a point completed twice"
    # (a trial killed before it recorded its worker has none: count the completed ones)
    assert len({t.user_attrs["worker"] for t in trials if t.state == TrialState.COMPLETE}) >= 3
    for name in PHASES:
        for trial in s.study(name).trials:
            if trial.state == TrialState.FAIL:
                assert trial.user_attrs.get("fail_reason"), f"{name} trial {trial.number} failed without a reason"
    print(f"\nscale-out: {s.seconds:.0f} s; killed {s.killed}; " + "; ".join(
        f"{name}: " + ", ".join(f"{k} {v}" for k, v in Counter(t.state.name for t in s.study(name).trials).items())
        for name in PHASES))


@pytest.mark.slow
def test_optuna_and_mlflow_agree_and_the_result_is_written_once(scale_out):
    s = scale_out
    print("\nmlflow: " + check_mlflow_counts(s.uri, EXPERIMENT, f"{STUDY}-seed0", s.storage, PHASES))
    [parent] = [r for r in s.runs() if r.info.run_name == f"{STUDY}-seed0" and "mlflow.parentRunId" not in r.data.tags]

    # the final table and the model: once, by the primary, in its run dir and in its run
    client = s.client()
    assert "test.best_merge.acc_ja" in parent.data.metrics
    assert len(client.get_metric_history(parent.info.run_id, "test.best_merge.acc_ja")) == 1
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"test_table.md", "history.png"} <= artifacts, artifacts
    written = sorted(p.parent.name for p in s.root.glob("*/test_table.json"))
    assert written == ["primary-restart", "seed1"], written  # not the killed primary's, no helper's
    assert (s.root / "primary-restart" / "best_model" / "model.safetensors").is_file()
    assert not list(s.root.glob("helper*/best_model"))


# ---- what users look at, in headless Chromium -------------------------------------------------------------

def shown(value: float) -> str:
    """A number as both UIs print it (JavaScript's shortest form: 1.0 is "1", 0.825 is "0.825")."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@pytest.mark.slow
def test_optuna_dashboard_shows_the_study_its_trials_and_history(scale_out, tmp_path):
    # what the pages say is checked against this study's own data: names, values, trial states
    study = scale_out.study()
    best = study.best_trial
    with optuna_dashboard(scale_out.storage, tmp_path / "dashboard.log") as url:
        _, text = dump_until(f"{url}/dashboard", [STUDY, f"{STUDY}-uniform", f"{STUDY}_seed1"], tmp=tmp_path)
        assert all(name in text for name in (STUDY, f"{STUDY}-uniform", f"{STUDY}_seed1")), text[:1000]
        page = f"{url}/dashboard/studies/{study_id(study)}"
        best_line = f"(number={best.number}) {shown(best.value)} Params = [{next(iter(best.params))}: " \
                    f"{shown(next(iter(best.params.values())))}"
        dom, text = dump_until(page, [f"{STUDY} (id=", best_line], tmp=tmp_path)
        assert f"{STUDY} (id={study_id(study)})" in text and best_line in text, text[:1500]
        assert all(f"{name}: {shown(value)}" in text for name, value in best.params.items()), text[:1500]
        assert dom.count('class="main-svg"') >= 2, "no history plot"  # plotly's svg layers
        states = [f"Trial {t.number} {t.state.name.capitalize()}" + (" Best Trial" if t.number == best.number else "")
                  for t in study.trials]
        _, text = dump_until(f"{page}/trials", [f"{len(study.trials)} Trials", states[0]], tmp=tmp_path)
        # the list as the page renders it (a virtual list: as many rows as fit the window), until
        # the first trial's panel
        listed = re.findall(r"Trial \d+ (?:Complete|Fail|Waiting|Running|Pruned)(?: Best Trial)?",
                            text[text.index(f"{len(study.trials)} Trials"):text.index("(trial_id=")])
        assert len(listed) >= min(len(states), 15) and listed == states[:len(listed)], (listed, states)
        # the first trial's panel: its metrics as user attributes, valued as the study holds them
        first = study.trials[0]
        for metric in ("acc", "acc_ja", "paper_acc_ja", "n"):
            assert f" {metric} {first.user_attrs[metric]!r} " in text or f" {metric} {shown(first.user_attrs[metric])} " \
                in text, (metric, text[:3000])
        screenshot(page, "optuna-dashboard-history.png", tmp=tmp_path)
        screenshot(f"{page}/trials", "optuna-dashboard-trials.png", tmp=tmp_path)


@pytest.mark.slow
def test_mlflow_ui_shows_the_parent_run_its_trials_and_two_studies_compared(scale_out, tmp_path):
    import urllib.parse

    s = scale_out
    runs = s.runs()
    parents = {r.info.run_name: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    first, second = parents[f"{STUDY}-seed0"], parents[f"{STUDY}_seed1-seed1"]
    experiment = first.info.experiment_id
    run_page = f"{s.uri}/#/experiments/{experiment}/runs/{first.info.run_id}"
    table = json.loads((s.root / "primary-restart" / "test_table.json").read_text())
    # every cell of the final table, as a metric of the parent run, with its value
    cells = [f"test.{model}.{metric} {shown(value)}" for model, row in table.items() for metric, value in row.items()]
    _, text = dump_until(run_page, [f"{STUDY}-seed0", *cells], tmp=tmp_path)
    assert f"{STUDY}-seed0" in text and f"best_value {shown(first.data.metrics['best_value'])}" in text, text[:1500]
    assert [cell for cell in cells if cell not in text] == [], text[:3000]
    children = [r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == first.info.run_id]
    listed = [name for name in children if name in text]
    assert len(listed) >= min(3, len(children)), text[-1500:]
    screenshot(run_page, "mlflow-parent-run.png", tmp=tmp_path)

    ids = [first.info.run_id, second.info.run_id]
    compare = (f"{s.uri}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
               f"&experiments={urllib.parse.quote(json.dumps([experiment]))}")
    names = f"{STUDY}-seed0 {STUDY}_seed1-seed1"
    _, text = dump_until(compare, [names, first.info.run_id, second.info.run_id], tmp=tmp_path)
    assert f"{first.info.run_id} {second.info.run_id}" in text and names in text, text[:1500]
    metrics = text[text.find("best_value"):]
    assert "test.best_merge.acc_ja" in metrics and "test.best_uniform.acc" in metrics, metrics[:800]
    screenshot(compare, "mlflow-compare-two-studies.png", tmp=tmp_path, size="1400,1400")


@pytest.mark.slow
def test_compare_chart_of_two_studies_final_tables(scale_out, tmp_path):
    s = scale_out
    parents = {r.info.run_name: r.info.run_id for r in s.runs() if "mlflow.parentRunId" not in r.data.tags}
    out = tmp_path / "compare-tables.png"
    proc = subprocess.run([sys.executable, "-m", "evo_core.compare", parents[f"{STUDY}-seed0"],
                           parents[f"{STUDY}_seed1-seed1"], "--uri", s.uri, "--out", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 runs, 6 models" in proc.stdout and out.stat().st_size > 10_000
    if os.environ.get("EVO_SCREENSHOTS_DIR"):
        import shutil

        shutil.copy(out, Path(os.environ["EVO_SCREENSHOTS_DIR"]) / out.name)
