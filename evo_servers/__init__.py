"""Loopback servers for a shared study: PostgreSQL (Optuna's storage, MLflow's backend) and an MLflow
tracking server. docs/scale-out.md is the runbook; the tests start theirs with the same code.
Test and operations tooling, not part of a search: it lives beside the core, imports nothing of the
project, and nothing of the project imports it (`python -m evo_core.servers` forwards here).

    python -m evo_servers                       # both on 127.0.0.1 in a temp dir; prints the URLs; Ctrl-C stops

    with postgres() as pg:                                   # a new cluster in a temp dir
        storage = pg.create_database("study")                # postgresql+psycopg://postgres@127.0.0.1:PORT/study
        with mlflow_server(pg.create_database("mlflow"), artifacts) as uri:   # http://127.0.0.1:PORT
            ...

PostgreSQL refuses to run as root: as root, the cluster belongs to an unprivileged user (`nobody`
unless named) and every server command runs as that user. Its data directory is a fresh one under
/tmp (the user must reach it), removed when the server stops; the server is tuned for throwaway use
(fsync off). Binaries: Debian's (/usr/lib/postgresql/*/bin, `apt-get install postgresql`), or
those in $EVO_PG_BIN; missing ones are a one-line RuntimeError naming the fix.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Postgres", "free_port", "main", "mlflow_server", "pg_bin_dir", "postgres"]

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bin_dir() -> Path:
    """The directory with initdb and pg_ctl: $EVO_PG_BIN, Debian's newest, or the PATH's."""
    candidates = [os.environ.get("EVO_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    candidates += [str(Path(found).parent) for found in [shutil.which("pg_ctl")] if found]
    for candidate in filter(None, candidates):
        if all(os.access(Path(candidate) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(candidate)
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql "
                       "(make system-deps does), or set EVO_PG_BIN")


@dataclass
class Postgres:
    port: int
    data: Path
    bin_dir: Path
    user: str | None  # the unprivileged user the server runs as (None: this one)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def start(self) -> None:
        """Start the server on its port (again, after stop), once it accepts connections."""
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.data} "
                   "-c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self.run("pg_ctl", "-D", str(self.data / "db"), "-l", str(self.data / "server.log"), "-w", "-t", "120",
                 "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server, its data kept: `fast` (clients disconnected cleanly) or `immediate` (as
        if its machine died: no shutdown, recovery at the next start)."""
        self.run("pg_ctl", "-D", str(self.data / "db"), "-m", mode, "-w", "-t", "60", "stop")

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """A server tool as the server's user; its output in the error when it fails."""
        proc = subprocess.run([str(self.bin_dir / args[0]), *args[1:]], cwd=self.data, text=True,
                              capture_output=True, **_as_user(self.user), **kwargs)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-1500:]}")
        return proc


def _as_user(user: str | None) -> dict:
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [],
            "env": {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": "/tmp"}}


@contextlib.contextmanager
def postgres(*, user: str | None = None, port: int | None = None) -> Iterator[Postgres]:
    """A new PostgreSQL cluster on 127.0.0.1:`port` (a free one by default), trust auth for the
    `postgres` role, stopped and deleted on exit. As root it runs as `user` (default nobody)."""
    bin_dir = pg_bin_dir()
    if os.geteuid() == 0:
        user = user or "nobody"
    elif user is not None and user != pwd.getpwuid(os.geteuid()).pw_name:
        raise RuntimeError(f"postgres(user={user!r}) needs root")
    else:
        user = None
    if user:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise RuntimeError(f"no user {user!r} to run PostgreSQL as (it refuses root): "
                               f"useradd --system {user}, or name another") from None
    data = Path(tempfile.mkdtemp(prefix="evo-pg-"))
    if user:
        os.chown(data, entry.pw_uid, entry.pw_gid)
    os.chmod(data, 0o700)
    pg = Postgres(port=port or free_port(), data=data, bin_dir=bin_dir, user=user)
    started = False
    try:
        pg.run("initdb", "-D", str(data / "db"), "-U", "postgres", "--auth=trust", "-E", "UTF8",
               "--locale=C", "--no-sync")
        for attempt in range(3):  # a free port may be taken by another process before the server binds it
            try:
                pg.start()
                break
            except RuntimeError as err:
                if port is not None or attempt == 2:
                    log = (data / "server.log").read_text(errors="replace")[-800:] if (data / "server.log").exists() else ""
                    raise RuntimeError(f"{err}; server log: {log}") from None
                pg.port = free_port()
        started = True
        yield pg
    finally:
        if started:
            with contextlib.suppress(Exception):  # (a test may have stopped it)
                pg.stop()
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts: str | Path, *, port: int | None = None,
                  log: str | Path | None = None, start_timeout: float = 300) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with `backend_store_uri` and proxied artifacts in `artifacts`
    (clients upload over HTTP, so workers on other machines need no shared disk); yields its URI
    once it answers, and stops it (its whole process group) on exit."""
    artifacts = Path(artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    out = open(log, "a") if log else subprocess.DEVNULL
    proc = None
    try:
        for attempt in range(3):  # a free port may be taken by another process before the server binds it
            chosen = port or free_port()
            command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(chosen),
                       "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts),
                       "--workers", "1"]
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
            uri = f"http://127.0.0.1:{chosen}"
            if _answers(proc, uri, start_timeout):
                break
            _stop_group(proc)  # whatever it started before it exited
            if port is not None or attempt == 2:
                raise RuntimeError(f"mlflow server exited ({proc.returncode}) before answering on {uri}"
                                   + (f"; see {log}" if log else ""))
        yield uri
    finally:
        if proc is not None:
            _stop_group(proc)
        if log:
            out.close()


def _answers(proc: subprocess.Popen, uri: str, timeout: float) -> bool:
    """True once `uri`/health answers; False if the process exits first; a RuntimeError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
                if response.status == 200:
                    return True
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server did not answer on {uri} within {timeout:g} s")
        time.sleep(0.5)


def _stop_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)  # uvicorn and huey may linger on graceful shutdown: then SIGKILL
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evo_servers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", default="mlartifacts", help="the MLflow server's artifact root")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--user", default=None, help="the server's user when run as root (default nobody)")
    args = parser.parse_args(argv)
    with postgres(user=args.user, port=args.pg_port) as pg:
        storage = pg.create_database("optuna")
        with mlflow_server(pg.create_database("mlflow"), Path(args.artifacts).resolve(), port=args.mlflow_port) as uri:
            print(f"postgresql  {pg.url()} (data {pg.data}, user {pg.user or 'this one'})")
            print(f"study       tracking.storage={storage}")
            print(f"mlflow      tracking.uri={uri}   (UI: open it in a browser)")
            print(f"dashboard   optuna-dashboard {storage}")
            print("Ctrl-C stops both (the PostgreSQL data is deleted)", flush=True)
            # kill PID stops both as Ctrl-C does; SIGINT too, explicitly: a process started in the
            # background by a non-interactive shell inherits SIGINT ignored, and Ctrl-C would do nothing
            signal.signal(signal.SIGTERM, _interrupt)
            signal.signal(signal.SIGINT, _interrupt)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    print("stopped", flush=True)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt

