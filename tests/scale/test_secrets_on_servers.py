"""Secrets stay secret (docs/scale-out.md, evo_core/_secrets.py): a study on real servers with a
unique password in tracking.storage (a PostgreSQL role that must give it) and in tracking.uri (the
MLflow server behind basic auth), then a grep for those passwords through everything the run wrote
or its servers keep: every file under run_dir, the mlruns dir, the captured output, the study's
and MLflow's databases (pg_dump), the MLflow server's artifact root and log: 0 hits. Then the
environment's passwords (PGPASSWORD, EVO_STORAGE_PASSWORD) against the same kind of role, and
which wins."""
from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import optuna
import psycopg
import pytest
import yaml

from evo_core import open_study
from evo_core._secrets import storage_url_with_env_password
from scale_support import REPO_ROOT, basic_auth_proxy, password_role

EXPERIMENT = "secrets"
SMALL = ["objective.search.limit=10", "+objective.test.limit=10", "merge=task_arithmetic", "space.warm_start_trials=2",
         "n_trials=3"]


def unique_password() -> tuple[str, str]:
    """(a password with characters a URL must encode, the unique part any form of it contains)"""
    token = secrets.token_hex(12)
    return f"pw@{token}:/%", token


def found(needles: dict[str, str], places: dict[str, bytes]) -> list[str]:
    return [f"{what} in {where}" for where, data in places.items() for what, needle in needles.items()
            if needle.encode() in data]


def files_under(root: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in root.rglob("*") if path.is_file()} if root.exists() else {}


def pg_dump(pg, database: str) -> bytes:
    """The whole database as SQL: every table's every row."""
    return pg.run("pg_dump", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", database).stdout.encode()


@pytest.mark.slow
def test_no_password_is_written_anywhere(servers, tmp_path):
    pg = servers.pg
    role = f"evo_secret_{secrets.token_hex(4)}"
    storage_password, storage_token = unique_password()
    mlflow_user, (mlflow_password, mlflow_token) = "evo-ml", unique_password()
    storage = password_role(pg, role, storage_password).replace(f"{role}@", f"{role}:{quote(storage_password, safe='')}@")
    run_dir, mlruns = tmp_path / "run", tmp_path / "mlruns"
    with basic_auth_proxy(servers.mlflow_uri, mlflow_user, mlflow_password) as proxy:
        host = proxy.uri.removeprefix("http://")
        uri = f"http://{mlflow_user}:{quote(mlflow_password, safe='')}@{host}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MLFLOW_TRACKING", "EVO_STORAGE"))}
        proc = subprocess.run(
            [sys.executable, "-m", "evo_ps", f"run_dir={run_dir}", f"tracking.mlruns_dir={mlruns}",
             f"tracking.storage={storage}", f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}", *SMALL],
            cwd=REPO_ROOT, capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    # the run worked, and with the passwords: the role refuses a login without its password, and
    # the MLflow server's proxy let every request through with the user's basic auth
    assert (run_dir / "test_table.json").is_file() and "| best_merge |" in proc.stdout
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(f"host=127.0.0.1 port={pg.port} user={role} dbname={role}").close()
    assert proxy.authorized > 10 and proxy.refused == 0, proxy
    from mlflow.tracking import MlflowClient
    client = MlflowClient(servers.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], max_results=100)
    [parent] = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert parent.info.status == "FINISHED" and "test.best_merge.acc_ja" in parent.data.metrics

    # the grep: in every place, neither password in any form
    needles = {"the storage password": storage_token, "the MLflow password": mlflow_token,
               "the MLflow basic auth header": base64.b64encode(f"{mlflow_user}:{mlflow_password}".encode()).decode()}
    places = {"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode(), **files_under(run_dir),
              **files_under(mlruns), **files_under(servers.logs),  # the MLflow server's artifact root and log
              "the study's database": pg_dump(pg, role), "the MLflow server's database": pg_dump(pg, "mlflow")}
    assert len(places) > 10 and any(name.endswith("_cli.log") for name in places)
    hits = found(needles, places)
    assert not hits, "\n".join(hits)
    assert len(found(needles, {"the command": " ".join(proc.args).encode()})) == 2  # it finds what is there

    # where they were, *** in their place
    masked_storage = f"postgresql+psycopg://{role}:***@127.0.0.1:{pg.port}/{role}"
    assert parent.data.params["storage"] == masked_storage
    config = yaml.safe_load(parent.data.params["config"])  # still YAML, the URLs masked
    assert config["tracking"]["storage"] == masked_storage and config["tracking"]["uri"] == f"http://{mlflow_user}:***@{host}"
    assert f"storage {masked_storage}" in proc.stdout and f"browse: {proxy.uri}" in proc.stdout
    # Hydra's saved configs are there, masked, and still YAML
    saved = {name: yaml.safe_load((run_dir / ".hydra" / name).read_text())
             for name in ("config.yaml", "overrides.yaml", "hydra.yaml")}
    assert f"tracking.storage={masked_storage}" in saved["overrides.yaml"]
    assert saved["config.yaml"]["tracking"]["storage"] == masked_storage


@pytest.fixture(scope="module")
def role(servers) -> tuple[str, str]:
    """A role that must give its password: (its URL without it, the password)."""
    name, (password, _) = f"evo_env_{secrets.token_hex(4)}", unique_password()
    return password_role(servers.pg, name, password), password


def opens(url: str) -> bool:
    """True if a study opens on `url`; False if the login is refused."""
    try:
        open_study(name="env", storage_url=url, sampler=optuna.samplers.RandomSampler())
        return True
    except Exception as err:  # noqa: BLE001  (SQLAlchemy wraps psycopg's error)
        assert "password authentication failed" in str(err) or "no password supplied" in str(err), err
        return False


def with_password(url: str, password: str) -> str:
    user_at = url.split("://", 1)[1].split("@", 1)[0] + "@"
    return url.replace(user_at, f"{user_at[:-1]}:{quote(password, safe='')}@", 1)


def test_a_storage_url_without_password_works_with_pgpassword(role, monkeypatch):
    url, password = role
    for name in ("PGPASSWORD", "EVO_STORAGE_PASSWORD", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", os.devnull)  # no ~/.pgpass of this machine's
    assert not opens(storage_url_with_env_password(url))
    monkeypatch.setenv("PGPASSWORD", password)  # libpq reads it itself
    assert opens(storage_url_with_env_password(url))


def test_which_password_wins(role, monkeypatch):
    """The URL's own over EVO_STORAGE_PASSWORD, and that over PGPASSWORD."""
    url, password = role
    monkeypatch.setenv("PGPASSFILE", os.devnull)
    monkeypatch.setenv("PGPASSWORD", "wrong")
    monkeypatch.setenv("EVO_STORAGE_PASSWORD", password)
    assert opens(storage_url_with_env_password(url))  # EVO_STORAGE_PASSWORD over PGPASSWORD
    monkeypatch.setenv("EVO_STORAGE_PASSWORD", "wrong")
    assert not opens(storage_url_with_env_password(url))
    assert opens(storage_url_with_env_password(with_password(url, password)))  # the URL's over both
