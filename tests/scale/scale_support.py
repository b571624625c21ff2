"""Helpers of the scale-out tests: trial counts straight from PostgreSQL, 1 primary + N helpers of
any search killed and restarted (run_workers) and their MLflow runs checked against the study,
headless Chromium (page DOM, visible text, screenshots) and optuna-dashboard on loopback. A missing Chromium FAILS the
test with one line naming the fix (`make test` installs it: make system-deps)."""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from evo_servers import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Servers:
    pg: object
    mlflow_uri: str
    logs: Path

    def database(self, name: str) -> str:
        return self.pg.create_database(name)


def count_trials(url: str, studies: tuple[str, ...], states: tuple[str, ...] | None = None) -> int:
    """Trials of `studies` in `states` (None: any), straight from PostgreSQL (0 until the tables exist)."""
    import psycopg

    states = states or ("RUNNING", "WAITING", "COMPLETE", "FAIL", "PRUNED")
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as con:
        try:
            return con.execute("select count(*) from trials join studies using (study_id) where study_name = any(%s) "
                               "and state::text = any(%s)", (list(studies), list(states))).fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return 0


# ---- headless Chromium ----------------------------------------------------------------------------------

def chromium_binary() -> str:
    found = shutil.which("chromium")
    if not found:
        pytest.fail("chromium not found: apt-get install chromium (make test does it: make system-deps)", pytrace=False)
    return found


def chromium(url: str, *mode: str, budget_ms: int = 20000, size: str = "1400,1000", tmp: Path) -> str:
    """One headless Chromium page load of `url` in a profile of its own; its stdout (the DOM with
    --dump-dom). Virtual time lets the page's scripts and requests finish before the dump."""
    profile = tmp / f"chromium-profile-{time.monotonic_ns()}"
    command = [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={size}",
               f"--virtual-time-budget={budget_ms}", *mode, url]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-1500:]}"
    return proc.stdout


def page_text(dom: str) -> str:
    """The visible text of a dumped DOM, whitespace collapsed."""
    import html
    import re

    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def dump_until(url: str, expected: list[str], *, tmp: Path, tries: int = 4) -> tuple[str, str]:
    """The DOM and text of `url` once every `expected` string is in its text (a busy machine may
    render slower than one virtual-time budget): (dom, text) of the last try."""
    for attempt in range(tries):
        dom = chromium(url, "--dump-dom", tmp=tmp, budget_ms=20000 * (attempt + 1))
        text = page_text(dom)
        if all(item in text for item in expected):
            break
    return dom, text


def screenshot(url: str, name: str, *, tmp: Path, size: str = "1400,1000") -> Path:
    """A PNG of `url` in tmp (and in $EVO_SCREENSHOTS_DIR if set: docs/img/ is refreshed that way)."""
    out = tmp / name
    chromium(url, f"--screenshot={out}", tmp=tmp, size=size, budget_ms=30000)
    assert out.stat().st_size > 10_000, f"{name}: screenshot too small"
    if os.environ.get("EVO_SCREENSHOTS_DIR"):
        target = Path(os.environ["EVO_SCREENSHOTS_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, target / name)
    return out


@contextlib.contextmanager
def optuna_dashboard(storage: str, log: Path):
    """optuna-dashboard on 127.0.0.1 for `storage`; its base URL once it answers."""
    port = free_port()
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from optuna_dashboard._cli import main; main()", storage, "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/api/studies", timeout=5) as response:
                    if response.status == 200:
                        break
            assert proc.poll() is None, f"optuna-dashboard exited ({proc.returncode}): {log.read_text()[-1500:]}"
            assert time.monotonic() < deadline, "optuna-dashboard did not answer within 300 s"
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


# ---- credentials: a PostgreSQL role that must log in with its password, an MLflow server behind basic auth ----

def password_role(pg, name: str, password: str) -> str:
    """A login role `name` with `password`, owning a new database `name`, which must give its
    password (scram-sha-256) although the cluster trusts every other role; that database's URL,
    without the password."""
    import psycopg
    from psycopg import sql

    admin = f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(sql.SQL("create role {} login password {}").format(sql.Identifier(name), sql.Literal(password)))
        con.execute(sql.SQL("create database {} owner {}").format(sql.Identifier(name), sql.Identifier(name)))
    hba = pg.data / "db" / "pg_hba.conf"
    owner = hba.stat()
    hba.write_text(f"host all {name} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())  # the first match wins
    os.chown(hba, owner.st_uid, owner.st_gid)
    pg.run("pg_ctl", "-D", str(pg.data / "db"), "reload")
    deadline = time.monotonic() + 30
    while True:  # the server rereads pg_hba.conf on its own time
        try:
            psycopg.connect(f"host=127.0.0.1 port={pg.port} user={name} dbname={name}", connect_timeout=5).close()
        except psycopg.OperationalError as err:
            assert "password" in str(err), err
            return f"postgresql+psycopg://{name}@127.0.0.1:{pg.port}/{name}"
        assert time.monotonic() < deadline, "pg_hba.conf was not reloaded within 30 s"
        time.sleep(0.2)


@dataclass
class AuthProxy:
    uri: str
    authorized: int = 0  # requests that carried the expected credentials
    refused: int = 0     # requests without them (answered 401)


@contextlib.contextmanager
def basic_auth_proxy(upstream: str, user: str, password: str):
    """An HTTP proxy on 127.0.0.1 in front of `upstream` (an MLflow server, which has no auth of its
    own) that answers 401 to any request without HTTP basic auth `user`:`password` and forwards the
    rest: the server as a user behind a login sees it, and proof that the credentials reached it."""
    import base64
    import http.client
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    target = urlsplit(upstream)
    hop_by_hop = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "authorization"}

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            body = self.body()
            if self.headers.get("Authorization") != expected:
                proxy.refused += 1
                self.reply(401, [("WWW-Authenticate", 'Basic realm="mlflow"')], b"")
                return
            proxy.authorized += 1
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=300)
            try:
                conn.request(self.command, self.path, body=body,
                             headers={k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop})
                response = conn.getresponse()
                data = response.read()
                self.reply(response.status, [(k, v) for k, v in response.getheaders() if k.lower() not in hop_by_hop],
                           data)
            finally:
                conn.close()

        def body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = forward

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    server.daemon_threads = True
    proxy = AuthProxy(uri=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()


# ---- one study, 1 primary + N helpers, each with its own run dir, killed with SIGKILL and restarted ----

@dataclass
class WorkerRun:
    root: Path
    outputs: dict[str, str]  # worker name -> its output (a killed worker's and its restart's apart)
    killed: list[str]        # what each kill hit, as the summary prints it
    seconds: float


def start_worker(module: str, root: Path, name: str, args: list[str]) -> subprocess.Popen:
    """A worker as a user starts it on its own machine: `python -m <module>` with its own run dir
    (root/name), output to root/name.log; `args` name the shared servers and the search."""
    log = open(root / f"{name}.log", "a")
    return subprocess.Popen([sys.executable, "-m", module, f"run_dir={root / name}", *args], cwd=REPO_ROOT,
                            stdout=log, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})


def trials_run(root: Path, name: str) -> int:
    """Trials worker `name` has finished, from its progress lines."""
    return sum(line.startswith("trial ") for line in (root / f"{name}.log").read_text().splitlines())


def run_workers(module: str, root: Path, args: list[str], *, helpers: int, victims: list[tuple[str, int]],
                seed: int) -> WorkerRun:
    """1 primary + `helpers` helpers started at once; then each victim in turn ("helper": one drawn
    at random, or "primary") is killed with SIGKILL at a random instant within 1.5 s after it has
    finished `n` more trials of its own, and started again with the same command; every worker
    must end with exit code 0."""
    rng, began = random.Random(seed), time.monotonic()
    helper = ["helper=true", "helper_wait_minutes=60"]
    procs = {"primary": start_worker(module, root, "primary", args)}
    procs |= {f"helper{i}": start_worker(module, root, f"helper{i}", [*args, *helper]) for i in range(1, helpers + 1)}
    killed = []
    for kind, n in victims:
        victim = rng.choice([p for p in procs if p.startswith("helper")]) if kind == "helper" else "primary"
        target = trials_run(root, victim) + n
        while trials_run(root, victim) < target:  # no worker may fail meanwhile (helpers may end cleanly)
            assert procs[victim].poll() is None and all(p.poll() in (None, 0) for p in procs.values()), \
                {name: (p.poll(), (root / f"{name}.log").read_text()[-2000:]) for name, p in procs.items()}
            time.sleep(0.5)
        time.sleep(rng.uniform(0, 1.5))
        assert procs[victim].poll() is None, f"{victim} ended before its kill"
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        killed.append(f"{victim} after {trials_run(root, victim)} trials of its own")
        procs[f"{victim}-restart"] = start_worker(module, root, f"{victim}-restart",
                                                  [*args, *([] if victim == "primary" else helper)])
        del procs[victim]
    for name, proc in procs.items():
        assert proc.wait() == 0, f"{name} failed:\n{(root / f'{name}.log').read_text()[-3000:]}"
    return WorkerRun(root=root, outputs={p.stem: p.read_text() for p in root.glob("*.log")}, killed=killed,
                     seconds=time.monotonic() - began)


def check_mlflow_counts(uri: str, experiment: str, run_name: str, storage: str, phases: tuple[str, ...]) -> str:
    """One parent run named `run_name`, FINISHED, and one nested run per finished trial of each
    phase (Optuna's and MLflow's counts equal, trial by trial, none logged twice); -> a summary."""
    import optuna
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=5000)
    runs = [r for r in runs if r.info.run_name == run_name or r.data.tags.get("study") in phases]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED", parent.info.status
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(nested) == len(runs) - 1
    names = [r.info.run_name for r in nested]
    assert len(set(names)) == len(names), f"a trial was logged twice: {sorted(names)}"
    for name in phases:
        logged = sorted(r.info.run_name for r in nested if r.data.tags["study"] == name)
        study = optuna.load_study(study_name=name, storage=storage)
        assert logged == [f"{name}/trial-{t.number:04d}" for t in study.trials if t.state.is_finished()], name
    for run in nested:
        if run.data.tags["state"] == "FAIL":
            assert run.data.tags.get("fail_reason"), run.info.run_name
    return f"1 parent run, {len(nested)} nested runs (" + ", ".join(
        f"{state} {n}" for state, n in Counter(r.data.tags["state"] for r in nested).items()) + ")"
