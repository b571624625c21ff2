"""Servers that fail fail fast (evo_core/_probes.py, docs/scale-out.md), on real servers: a storage
or tracking server that is down, refuses the password, lacks the database, cannot be reached or is
not MLflow stops `python -m evo_ps` in seconds with one `error:` line, before the tokenizer or any
model loads; an MLflow server killed mid-study (kill -9) stops the worker after
tracking.server_wait_seconds with one line and nothing lost, and the same command run again once
the server is back on the same stores completes the study and back-fills MLflow; PostgreSQL
stopped mid-study (as if its machine died) stops the worker in one line too, and the same command
resumes the study once it is back."""
from __future__ import annotations

import contextlib
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import psutil
import pytest
import transformers
from optuna.trial import TrialState

import evo_ps  # noqa: F401  (imported at collection: the timings below are the run's, not the imports')
from evo_core._probes import PROBE_SECONDS
from evo_servers import free_port, mlflow_server, postgres
from scale_support import REPO_ROOT, count_trials

SMALL = ["objective.search.limit=20", "+objective.test.limit=40", "merge=task_arithmetic", "space.warm_start_trials=2",
         "torch_threads=1"]
STUDY = "toy_ja_math"
PHASES = (f"{STUDY}-uniform", STUDY)
PASSWORD = "wrong-pw-7c1e"  # the password a failing command is given: never printed


@contextlib.contextmanager
def silent_server():
    """A TCP port that accepts connections and never answers (a hung host): its port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@contextlib.contextmanager
def html_server():
    """An HTTP server that answers every GET with an HTML page (a web server, not MLflow): its URL."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802  (http.server's name)
            body = b"<html><body>a web server</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def password_role(servers):
    """A role `evo_pw` that must give its password (scram) on the test cluster, whose other roles
    are trusted: a rule for it alone, first in pg_hba.conf, and the configuration reloaded."""
    import psycopg

    hba = servers.pg.data / "db" / "pg_hba.conf"
    hba.write_text("host all evo_pw 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    with psycopg.connect(f"host=127.0.0.1 port={servers.pg.port} user=postgres dbname=postgres",
                         autocommit=True) as con:
        con.execute("CREATE ROLE evo_pw LOGIN PASSWORD 'the-right-one'")
        con.execute("select pg_reload_conf()")
    return "evo_pw"


def startup_cases(servers, stack: contextlib.ExitStack) -> dict[str, tuple[list[str], str]]:
    """case -> (overrides, the start of the error line after `error: `)."""
    pg = f"127.0.0.1:{servers.pg.port}"
    dead, silent, web = free_port(), stack.enter_context(silent_server()), stack.enter_context(html_server())
    storage = lambda url: [f"tracking.storage={url}"]  # noqa: E731
    return {
        "storage refused": (storage(f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{dead}/optuna"),
                            f"PostgreSQL postgresql+psycopg://postgres:***@127.0.0.1:{dead}/optuna (tracking.storage): "
                            f"connection refused"),
        "wrong password": (storage(f"postgresql+psycopg://evo_pw:{PASSWORD}@{pg}/postgres"),
                           f"PostgreSQL postgresql+psycopg://evo_pw:***@{pg}/postgres (tracking.storage): "
                           f"authentication failed"),
        "no such database": (storage(f"postgresql+psycopg://postgres@{pg}/no_such_db"),
                             f"PostgreSQL postgresql+psycopg://postgres@{pg}/no_such_db (tracking.storage): "
                             f"no such database"),
        "host unknown": (storage(f"postgresql+psycopg://postgres:{PASSWORD}@db.invalid:5432/optuna"),
                         "PostgreSQL postgresql+psycopg://postgres:***@db.invalid:5432/optuna (tracking.storage): "
                         "unreachable: host unknown"),
        "storage silent": (storage(f"postgresql+psycopg://postgres@127.0.0.1:{silent}/optuna"),
                           f"PostgreSQL postgresql+psycopg://postgres@127.0.0.1:{silent}/optuna (tracking.storage): "
                           f"unreachable: no answer within {PROBE_SECONDS} s"),
        "mlflow refused": ([f"tracking.uri=http://evo:{PASSWORD}@127.0.0.1:{dead}"],
                           f"MLflow server http://evo:***@127.0.0.1:{dead} (tracking.uri): connection refused"),
        "mlflow silent": ([f"tracking.uri=http://127.0.0.1:{silent}"],
                          f"MLflow server http://127.0.0.1:{silent} (tracking.uri): unreachable: no answer within "
                          f"{PROBE_SECONDS} s"),
        "not mlflow": ([f"tracking.uri={web}"],
                       f"MLflow server {web} (tracking.uri): not an MLflow server (HTTP 200, but text/html"),
    }


@pytest.mark.slow  # 8 commands, two of them waiting out the 5 s connect timeout
def test_a_server_that_is_down_or_refuses_stops_the_command_in_seconds(servers, password_role, tmp_path, run_cli,
                                                                       error_line, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the tokenizer was loaded before the servers were probed")

    # the first thing run_study loads, before the data and the models: it must not be reached
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_loading)
    timings = {}
    with contextlib.ExitStack() as stack:
        cases = startup_cases(servers, stack)
        for case, (overrides, expected) in cases.items():
            run_dir, mlruns = tmp_path / case.replace(" ", "_"), tmp_path / f"{case.replace(' ', '_')}-mlruns"
            started = time.monotonic()
            proc = run_cli("evo_ps", f"run_dir={run_dir}", f"tracking.mlruns_dir={mlruns}", *SMALL, *overrides,
                           ok=False)
            seconds = time.monotonic() - started
            line = error_line(proc)
            assert line.startswith(f"error: {expected}"), (case, line)
            assert "unexpected" not in line and "Traceback" not in proc.stderr, (case, proc.stderr[-2000:])
            assert PASSWORD not in proc.stdout + proc.stderr, case
            assert seconds < PROBE_SECONDS + 10, (case, seconds)
            timings[case] = seconds
            # nothing of the study: no study.db, no MLflow store, no study in the PostgreSQL cluster
            assert not (run_dir / "study.db").exists() and not mlruns.exists(), case
    assert count_trials(servers.pg.url("postgres"), PHASES) == 0
    print("\nstart-up probes, seconds from the command to its error line: "
          + ", ".join(f"{case} {seconds:.1f}" for case, seconds in timings.items()))


# ---- an MLflow server killed mid-study ------------------------------------------------------------

WAIT = 10  # tracking.server_wait_seconds of the killed study


def kill_server_on(port: int) -> None:
    """kill -9 the whole process group of the server listening on 127.0.0.1:`port`."""
    [pid] = {c.pid for c in psutil.net_connections(kind="tcp")
             if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN}
    os.killpg(os.getpgid(pid), signal.SIGKILL)


def start_worker(root: Path, log: Path, *overrides: str) -> subprocess.Popen:
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, "-m", "evo_ps", f"run_dir={root / 'run'}", *SMALL, *overrides],
                                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})


def stop_after_trials(worker: subprocess.Popen, log: Path, storage: str, n: int, stop) -> float:
    """Once the study holds `n` COMPLETE trials, `stop()` a server; the seconds the worker takes to
    end after that."""
    while count_trials(storage, PHASES, ("COMPLETE",)) < n:
        assert worker.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    stop()
    stopped = time.monotonic()
    worker.wait(timeout=WAIT + 120)
    return time.monotonic() - stopped


def one_error_line(log: Path) -> str:
    """The one `error:` line a worker ended with: no traceback, nothing "unexpected", and it is the
    output's last line."""
    out = log.read_text()
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and out.rstrip().endswith(errors[0]), out[-3000:]
    assert "Traceback" not in out and "unexpected" not in out, out[-3000:]
    return errors[0]


def completed_trials(storage: str) -> dict[tuple[str, int], dict]:
    return {(name, t.number): t.params for name in PHASES
            for t in optuna.load_study(study_name=name, storage=storage).trials if t.state == TrialState.COMPLETE}


@pytest.mark.slow
def test_an_mlflow_server_killed_mid_study_stops_the_worker_in_one_line_and_a_rerun_backfills(servers, tmp_path):
    storage = servers.database("mlflow_killed")
    port, backend, artifacts = free_port(), f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts"
    command = [f"tracking.storage={storage}", f"tracking.uri=http://127.0.0.1:{port}", "tracking.experiment=killed",
               f"tracking.server_wait_seconds={WAIT}", "n_trials=8"]

    with mlflow_server(backend, artifacts, port=port, log=tmp_path / "mlflow.log"):
        first = start_worker(tmp_path, tmp_path / "first.log", *command)
        ended = stop_after_trials(first, tmp_path / "first.log", storage, 3, lambda: kill_server_on(port))
    assert first.returncode != 0
    line = one_error_line(tmp_path / "first.log")
    assert line.startswith(f"error: MLflow server http://127.0.0.1:{port} unreachable for {WAIT} s "
                           f"(tracking.server_wait_seconds): "), line
    # the wait (WAIT), the trial running at the kill, and the process's exit on a busy machine
    assert ended < WAIT + 60, ended
    print(f"\nMLflow server killed: the worker ended {ended:.1f} s later (server_wait_seconds={WAIT})")
    # nothing lost: every trial the worker finished is in the storage, none left running
    kept = completed_trials(storage)
    assert len(kept) >= 3
    assert count_trials(storage, PHASES, ("RUNNING",)) == 0

    # the server back on the same stores and port: the same command completes the study
    with mlflow_server(backend, artifacts, port=port, log=tmp_path / "mlflow.log") as uri:
        again = start_worker(tmp_path, tmp_path / "again.log", *command)
        assert again.wait(timeout=900) == 0, (tmp_path / "again.log").read_text()[-3000:]
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("killed").experiment_id], max_results=5000)
    studies = {name: optuna.load_study(study_name=name, storage=storage) for name in PHASES}
    assert {key: params for key, params in completed_trials(storage).items() if key in kept} == kept
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED" and "test.best_merge.acc_ja" in parent.data.metrics
    nested = sorted(r.info.run_name for r in runs if "mlflow.parentRunId" in r.data.tags)
    finished = sorted(f"{name}/trial-{t.number:04d}" for name, s in studies.items() for t in s.trials
                      if t.state.is_finished())
    assert nested == finished, (nested, finished)  # one nested run per finished trial, none twice
    assert all(r.info.status != "RUNNING" for r in runs)
    assert len([t for t in studies[STUDY].trials if t.state.is_finished()]) >= 8


@pytest.mark.slow
def test_postgresql_stopped_mid_study_stops_the_worker_in_one_line_and_the_study_resumes(tmp_path):
    command = [f"tracking.mlruns_dir={tmp_path / 'mlruns'}", "n_trials=6"]
    with postgres() as pg:  # a cluster of its own: it is stopped and started again
        storage = pg.create_database("stopped")
        first = start_worker(tmp_path, tmp_path / "first.log", f"tracking.storage={storage}", *command)
        # `fast`: every client cut off at once. Not `immediate`: this throwaway cluster runs with
        # synchronous_commit=off, so a crash may drop its last commits (a run lost trial 2 that way)
        ended = stop_after_trials(first, tmp_path / "first.log", storage, 3, lambda: pg.stop("fast"))
        assert first.returncode != 0
        line = one_error_line(tmp_path / "first.log")
        assert line.startswith(f"error: PostgreSQL {storage} (tracking.storage): connection "), line
        assert ended < 60, ended
        print(f"\nPostgreSQL stopped: the worker ended {ended:.1f} s later: {line}")

        pg.start()
        kept = completed_trials(storage)
        assert len(kept) >= 3
        again = start_worker(tmp_path, tmp_path / "again.log", f"tracking.storage={storage}", *command)
        assert again.wait(timeout=900) == 0, (tmp_path / "again.log").read_text()[-3000:]
        assert {key: params for key, params in completed_trials(storage).items() if key in kept} == kept
        main = optuna.load_study(study_name=STUDY, storage=storage)
        assert len([t for t in main.trials if t.state.is_finished()]) >= 6
        assert (tmp_path / "run" / "best_model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_an_mlflow_server_back_within_the_wait_costs_nothing(tmp_path, capsys):
    from evo_core import Tracker

    port, backend, artifacts = free_port(), f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts"
    with mlflow_server(backend, artifacts, port=port, log=tmp_path / "mlflow.log") as uri:
        tracker = Tracker(mlruns_dir=tmp_path / "unused", experiment="back", uri=uri, server_wait_seconds=300)
        run_id = tracker.start(run_id=None, run_name="s", params={"seed": 0})
        kill_server_on(port)
    logged = []  # the table, logged while the server is down: the call waits for it
    call = threading.Thread(target=lambda: logged.append(tracker.log_table({"best": {"acc": 0.5}}, prefix="test")))
    started = time.monotonic()
    call.start()
    time.sleep(3)
    with mlflow_server(backend, artifacts, port=port, log=tmp_path / "mlflow.log"):
        call.join(timeout=300)
        seconds = time.monotonic() - started
        assert logged, "the call did not return once the server was back"
        tracker.finish()
        run = tracker.client.get_run(run_id)
    assert run.data.metrics == {"test.best.acc": 0.5} and run.info.status == "FINISHED"
    out = capsys.readouterr().out
    # (the first call after the kill may find its kept-alive connection reset: "connection lost")
    assert re.search(rf"mlflow  server {uri} unreachable \(connection (refused|lost)\); trying again for up to 300 s",
                     out), out
    assert f"mlflow  server {uri} is back" in out, out
    print(f"\nMLflow server down and restarted: the call waited {seconds:.1f} s, then went on")
