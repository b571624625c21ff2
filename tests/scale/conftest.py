"""Real servers on loopback for the scale-out tests: one PostgreSQL cluster (run as an unprivileged
user when the tests run as root) and one MLflow tracking server backed by it, both started by
evo_servers as docs/scale-out.md does, and stopped after. No PostgreSQL binaries FAILS the
test with one line naming the fix: `make test` installs them (make system-deps)."""
from __future__ import annotations

import pytest
from scale_support import Servers

from evo_servers import mlflow_server, postgres


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    try:
        pg_context = postgres()
        pg = pg_context.__enter__()
    except RuntimeError as err:
        pytest.fail(f"PostgreSQL: {err}", pytrace=False)
    root = tmp_path_factory.mktemp("servers")
    try:
        with mlflow_server(pg.create_database("mlflow"), root / "artifacts", log=root / "mlflow.log") as uri:
            yield Servers(pg=pg, mlflow_uri=uri, logs=root)
    finally:
        pg_context.__exit__(None, None, None)


