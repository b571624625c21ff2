"""Credential masking (evo_core/_secrets.py), in process: the masking rule on tricky URLs and texts,
the environment's passwords, MLflow's credentials, and each writer it is applied to (streams, log
handlers, files, error lines, MLflow params). tests/scale/test_secrets_on_servers.py runs a whole study."""
from __future__ import annotations

import io
import json
import logging
import os
import sys
import traceback

import pytest
import yaml

from evo_core._cli import error_line
from evo_core._secrets import (mask_files, mask_secrets, masked_output, storage_url_with_env_password,
                               tracking_uri_without_credentials)

CASES = [
    ("postgresql+psycopg://evo:s3cret@db-host:5432/optuna", "postgresql+psycopg://evo:***@db-host:5432/optuna"),
    ("http://user:s3cret@mlflow-host:5000", "http://user:***@mlflow-host:5000"),
    ("mysql+pymysql://root:s3cret@db/optuna?charset=utf8", "mysql+pymysql://root:***@db/optuna?charset=utf8"),
    # percent-encoded @ : / % in the password
    ("postgresql://evo:p%40ss%3Aw%2Fo%25rd@h:5432/db", "postgresql://evo:***@h:5432/db"),
    # the same characters unencoded: still hidden whole (the last @ before the host ends it)
    ("postgresql://evo:p@ss:w/o%rd@h:5432/db", "postgresql://evo:***@h:5432/db"),
    ("postgresql://evo:pa?ss#w@h/db", "postgresql://evo:***@h/db"),
    # IPv6 hosts
    ("postgresql://evo:s3cret@[::1]:5432/db", "postgresql://evo:***@[::1]:5432/db"),
    ("http://u:s3cret@[2001:db8::7]:5000/", "http://u:***@[2001:db8::7]:5000/"),
    ("http://[::1]:5000/#/experiments/1", "http://[::1]:5000/#/experiments/1"),
    # no password: nothing to hide (a database user name is no secret), nothing changed
    ("postgresql+psycopg://postgres@127.0.0.1:5432/optuna", "postgresql+psycopg://postgres@127.0.0.1:5432/optuna"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:////srv/runs/run@2/study.db", "sqlite:////srv/runs/run@2/study.db"),
    ("file:///srv/mlartifacts/a@b", "file:///srv/mlartifacts/a@b"),
    ("https://registry.npmjs.org/@scope/pkg", "https://registry.npmjs.org/@scope/pkg"),
    # a bare token as an http(s) URL's user part
    ("https://ghp_abc123@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
    # passwords and tokens as parameters
    ("host=db password=s3cret dbname=optuna", "host=db password=*** dbname=optuna"),
    ("postgresql://evo@h/db?password=s3cret&sslmode=require", "postgresql://evo@h/db?password=***&sslmode=require"),
    ("https://bucket.s3/x?X-Amz-Signature=abc123&b=1", "https://bucket.s3/x?X-Amz-Signature=***&b=1"),
    ("postgresql://evo@h:5432/db?application_name=a@b", "postgresql://evo@h:5432/db?application_name=a@b"),
    # ambiguous (an @ in the path or query may end a password): hidden rather than shown
    ("http://u:pw@h/x?e=a@b", "http://u:***@b"),
    ("http://h:5000/x?e=a@b", "http://h:***@b"),
]


@pytest.mark.parametrize(("text", "masked"), CASES)
def test_each_url_shows_no_credential(text, masked):
    assert mask_secrets(text) == masked
    assert mask_secrets(masked) == masked  # idempotent


def test_several_urls_in_one_text_each_masked():
    text = ("tracking.storage=postgresql://a:pw1@h1/db,tracking.uri=http://b:pw2@h2:5000 "
            "then sqlite:///x.db and 'mysql://c:pw3@h3/db' and \"https://tok4@h4/x\"")
    masked = mask_secrets(text)
    assert not any(f"pw{i}" in masked for i in (1, 2, 3)) and "tok4" not in masked
    assert masked == ("tracking.storage=postgresql://a:***@h1/db,tracking.uri=http://b:***@h2:5000 "
                      "then sqlite:///x.db and 'mysql://c:***@h3/db' and \"https://***@h4/x\"")


def test_yaml_and_json_stay_valid_and_readable():
    config = {"tracking": {"storage": "postgresql+psycopg://evo:p%40ss@db:5432/optuna",
                           "uri": "http://u:s3cret@mlflow:5000", "experiment": "evo_ps"},
              "overrides": ["tracking.storage=postgresql+psycopg://evo:p%40ss@db:5432/optuna", "n_trials=3"]}
    for dump, load in ((yaml.safe_dump, yaml.safe_load), (json.dumps, json.loads)):
        text = mask_secrets(dump(config))
        assert "s3cret" not in text and "p%40ss" not in text
        back = load(text)
        assert back["tracking"] == {"storage": "postgresql+psycopg://evo:***@db:5432/optuna",
                                    "uri": "http://u:***@mlflow:5000", "experiment": "evo_ps"}
        assert back["overrides"] == ["tracking.storage=postgresql+psycopg://evo:***@db:5432/optuna", "n_trials=3"]


def test_evo_storage_password_fills_a_url_without_one(monkeypatch):
    monkeypatch.setenv("EVO_STORAGE_PASSWORD", "p@ss/word")
    assert storage_url_with_env_password("postgresql+psycopg://evo@db:5432/optuna") == \
        "postgresql+psycopg://evo:p%40ss%2Fword@db:5432/optuna"
    # the URL's own password wins; no user, or no URL: nothing to fill
    for url in ("postgresql+psycopg://evo:mine@db/optuna", "postgresql+psycopg://db/optuna", "sqlite:///x.db"):
        assert storage_url_with_env_password(url) == url
    monkeypatch.delenv("EVO_STORAGE_PASSWORD")
    assert storage_url_with_env_password("postgresql+psycopg://evo@db/optuna") == "postgresql+psycopg://evo@db/optuna"


def test_tracking_credentials_go_to_mlflow_environment_not_the_uri(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "env-user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "env-pw")
    mlflow_env = lambda: (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])  # noqa: E731
    assert tracking_uri_without_credentials("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert mlflow_env() == ("env-user", "env-pw")  # a URI without credentials leaves them be
    # the URI's credentials win, decoded
    assert tracking_uri_without_credentials("https://me%40corp:p%40ss%3Aword@[::1]:5000/path") == \
        "https://[::1]:5000/path"
    assert mlflow_env() == ("me@corp", "p@ss:word")


def test_the_tracker_keeps_no_credential_and_logs_none(tmp_path, monkeypatch):
    from evo_core import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    tracker = Tracker(mlruns_dir=tmp_path / "mlruns", experiment="secrets")
    config = "tracking:\n  storage: postgresql://evo:s3cret@db/optuna\n  uri: http://u:s3cret2@h:5000\n"
    run_id = tracker.start(run_id=None, run_name="r", params={"config": config, "note": "password=s3cret3"})
    params = tracker.client.get_run(run_id).data.params
    assert params == {"config": "tracking:\n  storage: postgresql://evo:***@db/optuna\n  uri: http://u:***@h:5000\n",
                      "note": "password=***"}


def test_masked_output_covers_prints_tracebacks_and_log_files(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    log = logging.getLogger()
    handler = logging.FileHandler(tmp_path / "job.log")
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    log.addHandler(handler)
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        with masked_output():
            print("storage postgresql://evo:s3cret@db/optuna")
            logging.getLogger("some.library").warning("cannot reach %s", "http://u:s3cret@h:5000/api")
            try:
                raise RuntimeError("API request to http://u:s3cret@h:5000/api failed")
            except RuntimeError:
                logging.getLogger("x").exception("failed")
                traceback.print_exc()
        print("after: not masked: http://u:plain@h")  # the wrapping ends with the block
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        log.removeHandler(handler)
        handler.close()
    written = out.getvalue() + err.getvalue() + (tmp_path / "job.log").read_text()
    assert "s3cret" not in written
    assert "postgresql://evo:***@db/optuna" in out.getvalue() and "http://u:***@h:5000/api failed" in err.getvalue()
    assert "[WARNING] cannot reach http://u:***@h:5000/api" in (tmp_path / "job.log").read_text()
    assert "http://u:plain@h" in out.getvalue()
    assert type(handler.formatter) is logging.Formatter  # its own formatter back after the block


def test_mask_files_rewrites_only_what_holds_a_credential(tmp_path):
    secret, plain = tmp_path / "overrides.yaml", tmp_path / "config.yaml"
    secret.write_text("- tracking.storage=postgresql://evo:s3cret@db/optuna\n- n_trials=3\n")
    plain.write_text("n_trials: 3\n")
    before = plain.stat().st_mtime_ns
    mask_files([secret, plain, tmp_path / "missing.yaml"])
    assert yaml.safe_load(secret.read_text()) == ["tracking.storage=postgresql://evo:***@db/optuna", "n_trials=3"]
    assert plain.stat().st_mtime_ns == before


def test_an_error_line_quoting_a_url_is_masked():
    message = "API request to http://u:s3cret@h:5000/api/2.0 failed\nwith postgresql://evo:s3cret2@db/x"
    assert error_line(message) == "error: API request to http://u:***@h:5000/api/2.0 failed with postgresql://evo:***@db/x"


def test_a_command_failing_on_its_servers_writes_no_password(tmp_path, run_cli):
    """`python -m evo_ps` whose servers refuse it (nothing listens): the driver's error ends the
    run, and neither password is in its output, Hydra's saved configs or its job log."""
    from evo_servers import free_port

    run_dir = tmp_path / "run"
    proc = run_cli("evo_ps", f"run_dir={run_dir}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
                   f"tracking.storage=postgresql+psycopg://evo:Storage%40S3cret@127.0.0.1:{free_port()}/optuna",
                   f"tracking.uri=http://evo:Tracking%40S3cret@127.0.0.1:{free_port()}", "objective.search.limit=4",
                   "n_trials=1", ok=False)
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    written = {"stdout": proc.stdout, "stderr": proc.stderr,
               **{str(path): path.read_text() for path in run_dir.rglob("*") if path.is_file()}}
    assert any(name.endswith("overrides.yaml") for name in written) and any(name.endswith(".log") for name in written)
    assert [name for name, text in written.items() if "S3cret" in text] == []
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert any(o.startswith("tracking.storage=postgresql+psycopg://evo:***@127.0.0.1:") for o in overrides)
    assert any(o.startswith("tracking.uri=http://evo:***@127.0.0.1:") for o in overrides)
