"""The shared stores on real servers: a PostgreSQL-backed study opened by several processes at once
on an empty database, a killed worker's trial failed by the heartbeat and retried with its reason,
and the MLflow tracking server reached over HTTP by workers starting together."""
from __future__ import annotations

import os
import time
import warnings

import optuna
from optuna.trial import TrialState

from evo_core import Tracker, open_study, wait_for_workers
from evo_core._optuna_compat import enqueued_params, trial_id
from evo_core._study import RetryAtItsPoint
from tests.evo_core.test_faults import at_once


def test_workers_open_a_new_study_on_an_empty_database_at_once(servers):
    url = servers.database("fresh_study")  # no tables yet: the four create the schema together
    first = {"a": 0.5}
    job = lambda: open_study(name="shared", storage_url=url, sampler=optuna.samplers.RandomSampler(),  # noqa: E731
                             first_trial=first)
    assert at_once(job, n=6) == [0] * 6
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["shared"]
    study = optuna.load_study(study_name="shared", storage=url)
    assert len(study.trials) == 1 and study.trials[0].state == TrialState.WAITING  # x0 enqueued once, not once each


def test_a_killed_workers_trial_is_failed_with_its_reason_and_retried_at_its_point(servers):
    url = servers.database("heartbeat")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2,
                                             heartbeat_stale_trial_callback=RetryAtItsPoint())
    study = optuna.create_study(study_name="s", storage=storage)

    def worker():  # asks a trial, beats once, and dies without a word (kill -9)
        storage.engine.dispose(close=False)  # the parent's connections stay the parent's
        trial = study.ask()
        trial.set_user_attr("point", {"a": 0.25, "b": 0.75})  # killed after storing only "a"
        trial.set_user_attr("worker", f"elsewhere:{os.getpid()}")
        trial.suggest_float("a", 0, 1, step=0.25)
        storage.record_heartbeat(trial_id(trial))
        os._exit(0)

    assert at_once(worker, n=1) == [0]
    started = time.monotonic()
    wait_for_workers(study, poll_seconds=0.5)
    assert time.monotonic() - started < 60
    [dead, retry] = optuna.load_study(study_name="s", storage=url).trials
    assert dead.state == TrialState.FAIL and dead.user_attrs["heartbeat_failed"] is True
    assert dead.user_attrs["fail_reason"].startswith("worker elsewhere:") and "no heartbeat" in dead.user_attrs["fail_reason"]
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == dead.number
    assert enqueued_params(retry) == {"a": dead.params["a"], "b": 0.75}


def test_workers_reach_the_mlflow_server_over_http_at_once(servers, tmp_path):
    uri = servers.mlflow_uri
    assert at_once(lambda: Tracker(mlruns_dir=tmp_path / "unused", experiment="http_at_once", uri=uri)) == [0] * 4
    assert not (tmp_path / "unused").exists()  # the server keeps runs and artifacts
    tracker = Tracker(mlruns_dir=tmp_path / "unused", experiment="http_at_once", uri=uri + "/")
    run_id = tracker.start(run_id=None, run_name="s", params={"seed": 0}, key="k1")
    assert tracker.start(run_id=None, run_name="s", params={}, key="k1") == run_id  # found again by its key
    tracker.log_table({"best_merge": {"acc_ja": 0.5}}, prefix="test")
    tracker.finish()
    run = tracker.client.get_run(run_id)
    assert run.data.metrics["test.best_merge.acc_ja"] == 0.5 and run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [a.path for a in tracker.client.list_artifacts(run_id)] == ["test_table.md"]


def test_the_documented_command_starts_both_servers_and_stops_them(tmp_path):
    import re
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from evo_servers import free_port

    command = [sys.executable, "-m", "evo_servers", "--pg-port", str(free_port()),
               "--mlflow-port", str(free_port()), "--artifacts", str(tmp_path / "artifacts")]
    proc = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stdout:  # until it says both are up (pytest-timeout bounds the wait)
        lines.append(line)
        if line.startswith("Ctrl-C"):
            break
    out = "".join(lines)
    assert proc.poll() is None, out
    storage = re.search(r"tracking\.storage=(\S+)", out).group(1)
    uri = re.search(r"tracking\.uri=(\S+)", out).group(1)
    data = Path(re.search(r"\(data (\S+),", out).group(1))
    assert "user nobody" in out if os.geteuid() == 0 else True
    study = optuna.create_study(study_name="cli", storage=storage)
    study.optimize(lambda t: t.suggest_float("a", 0, 1), n_trials=2)
    from mlflow.tracking import MlflowClient
    assert MlflowClient(uri).search_experiments()  # the server answers
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=300) == 0 and "stopped" in proc.stdout.read()
    assert not data.exists()  # the throwaway cluster is gone
