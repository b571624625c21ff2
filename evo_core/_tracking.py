"""MLflow tracking: one parent run per study, one nested run per trial, the final table.

    tracker = Tracker(mlruns_dir="mlruns", experiment="evo_ps/toy_ja_math")
    run_id = tracker.start(run_id=None, run_name="toy", params={...})   # or resume a run id
    study.optimize(..., callbacks=[tracker.log_trial])
    tracker.log_table({"base": {"acc": .., "acc_ja": ..}, ...}, prefix="test")
    tracker.finish()

The backend is a SQLite database plus an artifact folder, both inside `mlruns/` (MLflow 3 refuses a
plain file store by default). Workers may open a fresh store at once (one creates its tables at a
time); a resumed study whose run is not in this store (mlruns_dir moved) starts a new run tagged
with the old id; `log_missing_trials` gives trials that no callback saw (failed by the heartbeat
of a killed worker) their nested run afterwards. Browse it with:
mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db

With `uri` (tracking.uri: an `mlflow server`, docs/scale-out.md) every worker logs over HTTP
instead, and the server keeps the runs and the artifacts; `mlruns_dir` is then unused. Credentials
in it (`http://user:pw@host:5000`) go to MLflow as MLFLOW_TRACKING_USERNAME/PASSWORD, never in the
URI it keeps; every param and tag is logged with its credentials masked (_secrets.py).
A server that goes away is tried again for `server_wait_seconds`, then the worker stops in one line
(evo_core/_probes.py BoundedClient); a rerun logs what it missed (log_missing_trials).
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from datetime import datetime
from collections.abc import Iterable, Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from ._files import open_store, writable_dir
from ._secrets import mask_secrets, tracking_uri_without_credentials
from ._probes import BoundedClient, is_http_url
from ._study import best_trial, finished_trials

_TRIAL_RUN_NAME = re.compile(r"/trial-(\d+)$")


def markdown_table(table: dict[str, dict[str, float]], columns: Sequence[str] | None = None) -> str:
    """model -> metrics as the Markdown table the CLIs print (and the docs show: bench/results.py):
    a column whose scores are all in [0, 1] as percentages with one decimal, other numbers as they
    are. Every metric, sorted; or `columns`: those of them the table has, in that order (a docs block keeps the
    columns it shows when a run's table gains one)."""
    present = {m for row in table.values() for m in row}
    metrics = sorted(present) if columns is None else [m for m in columns if m in present]
    lines = ["| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    # a column is in percent only if all its numbers are in [0, 1] (a weighted sum of accuracies,
    # lm_eval's `score`, may be 0.4 in one row and 1.2 in the next: the same unit in both)
    percent = {m: all(0 <= row[m] <= 1 for row in table.values() if row.get(m) is not None) for m in metrics}
    lines += [f"| {model} | " + " | ".join(_cell(row.get(m), percent[m]) for m in metrics) + " |"
              for model, row in table.items()]
    return "\n".join(lines) + "\n"


def mlflow_ui_command(mlruns_dir: Path) -> str:
    return f"mlflow ui --backend-store-uri sqlite:///{mlruns_dir / 'mlflow.db'}"


class Tracker:
    """Logs a study to MLflow through explicit run ids (no global active-run state)."""

    def __init__(self, *, mlruns_dir: str | Path, experiment: str, uri: str | None = None,
                 server_wait_seconds: float = 60.0):
        # MLflow is imported here: it is slow to import and only the CLI paths need it
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a server's "View run" line per run
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        if uri:  # a tracking server: it owns the store and the artifact root
            self.mlruns_dir, self.uri = None, tracking_uri_without_credentials(uri).rstrip("/")
        else:
            self.mlruns_dir = writable_dir(mlruns_dir, key="tracking.mlruns_dir")
            self.uri = f"sqlite:///{self.mlruns_dir / 'mlflow.db'}"

        def open_experiment() -> tuple[MlflowClient, str]:  # a new client creates the store's tables
            client = MlflowClient(tracking_uri=self.uri)
            if is_http_url(self.uri):  # a server that goes away mid-run: a bounded wait, then one line
                client = BoundedClient(client, uri=self.uri, wait_seconds=server_wait_seconds)
            found = client.get_experiment_by_name(experiment)
            if found:
                return client, found.experiment_id
            try:
                return client, client.create_experiment(
                    experiment, artifact_location=self.mlruns_dir and (self.mlruns_dir / "artifacts").as_uri())
            except MlflowException as err:  # another worker created it first
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                return client, client.get_experiment_by_name(experiment).experiment_id

        self.client, self.experiment_id = open_store(self.uri, open_experiment)
        self.run_id: str | None = None

    def start(self, *, run_id: str | None, run_name: str, params: dict[str, object], key: str | None = None,
              join: bool = False) -> str:
        """Start the study's parent run, or reopen `run_id` when the study resumes; a `run_id` this
        store does not hold (the study's MLflow store moved) starts a new run tagged with it. A new
        run is tagged with `key` (the study's), and without a `run_id` the run of that key is reopened:
        the run of a primary killed before it could store the run's id on the study. `join` (a
        helper): log into `run_id` as it is, its status left to the primary (a helper started after
        the primary finished must not mark the run RUNNING again)."""
        from mlflow.exceptions import MlflowException

        if join and run_id is not None:
            try:
                self.client.get_run(run_id)
                self.run_id = run_id
                return run_id
            except MlflowException as err:  # not in this store: a run of its own, as below
                if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise

        if run_id is None and key is not None:
            found = self.client.search_runs([self.experiment_id], f"tags.evo_run_key = '{key}'", max_results=1)
            run_id = found[0].info.run_id if found else None
        if run_id is not None:
            try:
                self.client.update_run(run_id, status="RUNNING")
                self.run_id = run_id
                return run_id
            except MlflowException as err:
                if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
        tags = {"resumed_from_run_id": run_id} if run_id else {}
        run = self.client.create_run(self.experiment_id, run_name=run_name,
                                     tags=tags | ({"evo_run_key": key} if key else {}) or None)
        self.run_id = run.info.run_id
        for name, value in params.items():  # the resolved config among them: its URLs masked
            self.client.log_param(self.run_id, name, mask_secrets(str(value))[:6000])
        return self.run_id

    def log_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: one nested run per finished trial (params, metrics, state)."""
        assert self.run_id is not None, "start() the parent run first"
        from mlflow.entities import Metric, Param

        tags = {"mlflow.parentRunId": self.run_id, "state": trial.state.name, "study": study.study_name}
        if "fail_reason" in trial.user_attrs:  # why a FAIL failed, next to its state (MLflow caps tags at 8,000)
            tags["fail_reason"] = mask_secrets(trial.user_attrs["fail_reason"])[:5000]
        elif trial.state.name == "FAIL":  # only the heartbeat fails a trial without a reason of its own
            tags["fail_reason"] = f"worker {trial.user_attrs.get('worker', '?')} stopped: no heartbeat for 30 s"
        nested = self.client.create_run(
            self.experiment_id, run_name=f"{study.study_name}/trial-{trial.number:04d}", tags=tags)
        metrics = {k: v for k, v in trial.user_attrs.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        stamp = int((trial.datetime_complete or trial.datetime_start).timestamp() * 1000)
        self.client.log_batch(
            nested.info.run_id,
            metrics=[Metric(k, float(v), stamp, trial.number) for k, v in metrics.items()],
            params=[Param(k, repr(v)) for k, v in trial.params.items()])
        self.client.set_terminated(nested.info.run_id, status="FINISHED" if trial.state.name == "COMPLETE" else "FAILED")
        # the study's best by best_trial's rule (a trial racing stopped early is never the best)
        complete = [t for t in study.get_trials(deepcopy=False)
                    if t.state.name == "COMPLETE" and not t.user_attrs.get("partial")]
        if complete and len(study.directions) == 1:
            self.client.log_metric(self.run_id, "best_value", best_trial(study).values[0], step=trial.number)

    def log_missing_trials(self, studies: Iterable[optuna.Study], *, settle_seconds: float = 30.0) -> None:
        """Log the finished trials of `studies` that have no nested run yet (a trial failed by the
        heartbeat of a killed worker never reaches a callback; a worker that stopped because its
        MLflow server went away logged none of the trials after it): one nested run per trial. A
        trial another worker finished less than `settle_seconds` ago may still be in that worker's
        own callback (a helper's last trial, as the primary gets here): it is left to that worker
        until then, and logged here only if no run of it has appeared by that time (the worker died
        right after finishing it); a trial failed by the heartbeat is logged at once (no worker is
        left). A run left half-logged (RUNNING: its server went away between two calls) is deleted
        and the trial logged again; a second run of one trial is deleted (one run per trial)."""
        studies = list(studies)
        while True:
            waiting = False
            for study in studies:
                runs: dict[int, list] = {}
                for run in self._nested_runs(study.study_name):
                    if match := _TRIAL_RUN_NAME.search(run.info.run_name or ""):
                        runs.setdefault(int(match.group(1)), []).append(run)
                for trial in finished_trials(study):
                    done = [run for run in runs.get(trial.number, []) if run.info.status != "RUNNING"]
                    if done:
                        for extra in done[1:]:
                            self.client.delete_run(extra.info.run_id)
                        continue
                    orphan = trial.state.name == "FAIL" and ("heartbeat_failed" in trial.user_attrs
                                                             or "fail_reason" not in trial.user_attrs)
                    age = (datetime.now() - (trial.datetime_complete or datetime.now())).total_seconds()
                    if orphan or age >= settle_seconds:
                        for partial in runs.get(trial.number, []):
                            self.client.delete_run(partial.info.run_id)
                        self.log_trial(study, trial)
                    else:
                        waiting = True
            if not waiting:
                return
            time.sleep(1.0)

    def _nested_runs(self, study_name: str) -> list:
        query = f"tags.mlflow.parentRunId = '{self.run_id}' and tags.study = '{study_name}'"
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def log_table(self, table: dict[str, dict[str, float]], *, prefix: str) -> str:
        """Log a comparison table (model -> metrics) as metrics `prefix.model.metric` and as a
        Markdown artifact; returns the Markdown."""
        for model, row in table.items():
            for metric, value in row.items():
                self.client.log_metric(self.run_id, f"{prefix}.{model}.{metric}", float(value))
        markdown = markdown_table(table)
        self.client.log_text(self.run_id, markdown, f"{prefix}_table.md")
        return markdown

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


def _cell(value: float | None, percent: bool = True) -> str:
    return "" if value is None else f"{100 * value:.1f}" if percent and 0 <= value <= 1 else f"{value:g}"
