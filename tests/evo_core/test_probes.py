"""The bounded wait for an MLflow server that went away (evo_core/_probes.py), on a real socket with
nothing behind it: given up after server_wait_seconds rather than after MLflow's minutes of urllib3
retries, once per process. The servers themselves are in tests/scale/test_servers_fail_fast.py."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from evo_core import Tracker
from evo_core._probes import BoundedClient, ServerUnreachable, server_gone
from evo_servers import free_port


def test_a_dead_mlflow_server_is_given_up_after_the_wait_and_then_at_once(tmp_path):
    from mlflow.tracking import MlflowClient

    uri, said = f"http://evo:s3cret@127.0.0.1:{free_port()}", []
    client = BoundedClient(MlflowClient(uri), uri=uri, wait_seconds=3, say=said.append)
    started = time.monotonic()
    with pytest.raises(ServerUnreachable) as err:
        client.get_experiment_by_name("x")
    seconds = time.monotonic() - started
    assert 3 <= seconds < 10, seconds
    assert str(err.value).startswith(f"MLflow server http://evo:***@{uri.split('@')[1]} unreachable for 3 s "
                                     f"(tracking.server_wait_seconds): connection refused; ")
    assert said == [f"mlflow  server http://evo:***@{uri.split('@')[1]} unreachable (connection refused); trying "
                    f"again for up to 3 s (tracking.server_wait_seconds)"]
    started = time.monotonic()
    with pytest.raises(ServerUnreachable):  # closing the run as FAILED does not wait a second time
        client.set_terminated("some-run", status="FAILED")
    assert time.monotonic() - started < 1


def test_a_tracker_on_a_dead_server_stops_within_its_wait(tmp_path):
    started = time.monotonic()
    with pytest.raises(ServerUnreachable, match=r"unreachable for 2 s \(tracking.server_wait_seconds\): connection "
                                                r"refused"):
        Tracker(mlruns_dir=tmp_path / "unused", experiment="x", uri=f"http://127.0.0.1:{free_port()}",
                server_wait_seconds=2)
    assert time.monotonic() - started < 10
    assert not (tmp_path / "unused").exists()


def test_only_a_lost_storage_server_is_one_line():
    import sqlalchemy.exc

    def operational(message: str) -> Exception:
        return sqlalchemy.exc.OperationalError("select 1", {}, Exception(message))

    postgres = SimpleNamespace(storage="postgresql+psycopg://evo:s3cret@db-host:5432/optuna", uri=None)
    line = server_gone(operational("connection to server at \"db-host\" (10.0.0.5), port 5432 failed: Connection "
                                   "refused"), postgres)
    assert line.startswith("PostgreSQL postgresql+psycopg://evo:***@db-host:5432/optuna (tracking.storage): "
                           "connection refused; "), line
    # a fast shutdown caught mid-commit: Optuna's own error then hides the driver's in its context
    try:
        try:
            raise operational('connection to server at "db-host", port 5432 failed: FATAL:  the database system is '
                              'shutting down')
        except Exception:
            raise UnboundLocalError("cannot access local variable 'updated_state'")
    except UnboundLocalError as hidden:
        assert "connection lost; " in server_gone(hidden, postgres)
    assert server_gone(operational("deadlock detected"), postgres) is None  # not about reaching it: a bug's traceback
    assert server_gone(ValueError("connection refused"), postgres) is None
    sqlite = SimpleNamespace(storage=None, uri=None)
    assert server_gone(operational("disk I/O error"), sqlite) is None


@pytest.mark.parametrize("command", ["evo_ps", "evo_dfs", "evo_breed"])
def test_the_wait_is_a_key_of_every_search_and_must_be_positive(cli_error, tmp_path, command):
    line = cli_error(command, f"run_dir={tmp_path / 'run'}", "tracking.server_wait_seconds=0")
    assert line == "error: tracking.server_wait_seconds must be > 0; got 0.0", line
