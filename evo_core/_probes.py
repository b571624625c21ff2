"""The servers a study uses, probed before anything loads, and a bounded wait when one goes away.

    probe_servers(cfg.tracking)               # each server in seconds, else one ServerUnreachable line
    client = BoundedClient(MlflowClient(uri), uri=uri, wait_seconds=60)   # gives up after 60 s down
    message = server_gone(err, cfg.tracking)  # a storage server that went away mid-run: its one line

At start, `tracking.storage` (when it is PostgreSQL or MySQL) and `tracking.uri` (an MLflow server
over HTTP, or a database URL MLflow writes to directly) are each tried once, with a connect timeout
of PROBE_SECONDS, before the tokenizer, the data and the models load. A failure is one line naming
the server (its password masked), its config key and the cause: connection refused, authentication
failed, no such database, unreachable (host unknown, no route, or no answer within PROBE_SECONDS),
or not an MLflow server (HTTP answers, but not MLflow's REST API).

Mid-run, every call the Tracker makes to an MLflow server goes through BoundedClient: MLflow's own
urllib3 retries (7 with exponential backoff: 6 to 8.5 minutes on a dead server) are turned off for
the call, and the call is tried again every few seconds until the server has been unreachable for
`tracking.server_wait_seconds`. Then the worker STOPS with one line (the rule, docs/scale-out.md):
its finished trials are in the study's storage, and the same command run again once the server is
back resumes the study and logs the nested runs the server missed (Tracker.log_missing_trials).
The server stays marked down in that process, so closing the run as FAILED does not wait again.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from ._secrets import mask_secrets, storage_url_with_env_password

PROBE_SECONDS = 5  # the connect timeout of a probe at start (libpq's minimum is 2)
RETRY_SECONDS = 2.0  # between two tries of a call to a server that went away

DATABASE_SCHEMES = ("postgresql", "mysql")


class ServerUnreachable(ValueError):
    """A configured server that cannot be used, as one line: which server (password masked), its
    config key, and the cause. A ValueError, so that the CLI prints it as one `error:` line: at
    start it is a mistake in the config (host, port, password, database) or a server not started."""


def is_database_url(url: str | None) -> bool:
    return bool(url) and url.split(":", 1)[0].split("+", 1)[0] in DATABASE_SCHEMES


def is_http_url(url: str | None) -> bool:
    return bool(url) and url.split(":", 1)[0] in ("http", "https")


def probe_servers(tracking: Any, *, timeout: float = PROBE_SECONDS) -> None:
    """Each server of the `tracking` config group, tried once (module docstring); a
    ServerUnreachable for the first that fails. SQLite and a local MLflow store are not servers."""
    if is_database_url(tracking.storage):  # with its password from the environment, as the study will connect
        probe_database(storage_url_with_env_password(tracking.storage), key="tracking.storage", timeout=timeout)
    if is_http_url(tracking.uri):
        probe_mlflow(tracking.uri, key="tracking.uri", timeout=timeout)
    elif is_database_url(tracking.uri):
        probe_database(tracking.uri, key="tracking.uri", timeout=timeout)


# ---- databases ------------------------------------------------------------------------------------

def probe_database(url: str, *, key: str, timeout: float = PROBE_SECONDS) -> None:
    """Connect to the database server of `url` (SQLAlchemy) and run `select 1`."""
    import sqlalchemy

    name = _database_kind(url)
    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                          connect_args={"connect_timeout": max(2, int(timeout))})
    except Exception as err:  # noqa: BLE001  (no driver for the scheme, a malformed URL)
        raise ServerUnreachable(f"{name} {mask_secrets(url)} ({key}): cannot open it: {_first_line(err)}") from None
    try:
        with engine.connect() as con:
            con.execute(sqlalchemy.text("select 1"))
    except Exception as err:  # noqa: BLE001  (classified below; anything else is shown by its first line)
        cause = database_cause(err, timeout=timeout) or _first_line(getattr(err, "orig", None) or err)
        raise ServerUnreachable(f"{name} {mask_secrets(url)} ({key}): {cause}") from None
    finally:
        engine.dispose()


def _database_kind(url: str) -> str:
    return "PostgreSQL" if url.startswith("postgresql") else "MySQL"


# what a driver's message says -> the cause named (libpq's and MySQL's wording)
_DATABASE_CAUSES = (
    (r"password authentication failed|no password supplied|access denied|authentication failed|"
     r"role .* does not exist|pg_hba\.conf rejects", "authentication failed"),
    (r"database .* does not exist|unknown database", "no such database"),
    (r"connection refused|\(111\)|errno 111", "connection refused"),
    (r"could not translate host name|name or service not known|unknown (mysql server )?host|"
     r"nodename nor servname|temporary failure in name resolution", "unreachable: host unknown"),
    (r"network is unreachable|no route to host", "unreachable: no route to the host"),
    (r"timeout expired|timed out", "unreachable: no answer within {timeout:g} s"),
    (r"server closed the connection|terminating connection|connection .* (lost|closed)|"
     r"lost connection|gone away|consuming input failed|connection reset|"
     r"the database system is (shutting down|starting up|in recovery mode)", "connection lost"),
)


def database_cause(err: BaseException, *, timeout: float = PROBE_SECONDS) -> str | None:
    """The cause a database driver's error stands for (_DATABASE_CAUSES), or None when it is not
    about reaching the server (a bad query, a deadlock)."""
    text = " ".join(str(e) for e in _chain(err)).lower()
    for pattern, cause in _DATABASE_CAUSES:
        if re.search(pattern, text):
            return cause.format(timeout=timeout)
    return None


def server_gone(err: BaseException, tracking: Any) -> str | None:
    """The one line for `err` if it says that the study's storage server (PostgreSQL, MySQL) cannot
    be reached, mid-run; else None. Finished trials are the server's: they are kept when it is back."""
    if isinstance(err, ServerUnreachable) or not is_database_url(tracking.storage):
        return None
    if not any(type(e).__name__ == "OperationalError" for e in _chain(err)):
        return None
    cause = database_cause(err)
    if cause is None:
        return None
    return (f"{_database_kind(tracking.storage)} {mask_secrets(tracking.storage)} (tracking.storage): {cause}; the "
            f"study's finished trials are kept by the server: once it is back, run the same command again (the "
            f"study resumes)")


# ---- MLflow ---------------------------------------------------------------------------------------

def probe_mlflow(uri: str, *, key: str, timeout: float = PROBE_SECONDS) -> None:
    """One request to the MLflow REST API of `uri` (experiments/search, one result): refused,
    unreachable, an authentication the server rejects, or an answer that is not the API's JSON."""
    url, headers = _without_userinfo(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
    where = f"MLflow server {mask_secrets(uri)} ({key})"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            body, kind = response.read(1_000_000), response.headers.get_content_type()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise ServerUnreachable(f"{where}: authentication failed (HTTP {err.code})") from None
        if err.code >= 500:
            raise ServerUnreachable(f"{where}: server error (HTTP {err.code})") from None
        raise ServerUnreachable(f"{where}: not an MLflow server (HTTP {err.code} for its REST API)") from None
    except (urllib.error.URLError, OSError) as err:
        raise ServerUnreachable(f"{where}: {_socket_cause(getattr(err, 'reason', err), timeout)}") from None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not set(answer) <= {"experiments", "next_page_token"}:
        raise ServerUnreachable(f"{where}: not an MLflow server (HTTP 200, but {kind} that is not its REST API's "
                                f"answer)")


def _without_userinfo(url: str) -> tuple[str, dict[str, str]]:
    """`url` without user:password, and the Authorization header MLflow's client would send: from
    the URL's user:password, else MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD."""
    parts = urllib.parse.urlsplit(url)
    user, password = parts.username, parts.password
    user, password = (urllib.parse.unquote(user) if user else os.environ.get("MLFLOW_TRACKING_USERNAME"),
                      urllib.parse.unquote(password) if password else os.environ.get("MLFLOW_TRACKING_PASSWORD"))
    headers = {}
    if user and password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), headers


def _socket_cause(reason: Any, timeout: float) -> str:
    """A socket error (urllib's reason) as a cause."""
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "unreachable: host unknown"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"unreachable: no answer within {timeout:g} s"
    if isinstance(reason, OSError) and reason.strerror:
        return f"unreachable: {reason.strerror.lower()}"
    return f"unreachable: {reason}"


# what a failed MLflow call over HTTP says (requests / urllib3) -> the cause named; the calls with
# none of these failed for another reason and are not retried
_HTTP_CAUSES = (
    (r"connection refused|errno 111", "connection refused"),
    (r"name or service not known|temporary failure in name resolution|nodename nor servname|"
     r"failed to resolve", "host unknown"),
    (r"network is unreachable|no route to host", "no route to the host"),
    (r"read timed out|connect timeout|connecttimeout|timed out", "no answer"),
    (r"connection reset|connection aborted|remotedisconnected|connection broken|protocolerror",
     "connection lost"),
    (r"too many (50[0234]|429|408) error responses", "server error"),
)


def mlflow_unreachable_cause(err: BaseException) -> str | None:
    """The cause when `err` (an MlflowException around a requests error) says the server could not
    be reached or answered with a transient server error; else None (a real API error)."""
    chain = list(_chain(err))
    if not any(type(e).__module__.split(".")[0] in ("requests", "urllib3") or isinstance(e, OSError)
               for e in chain) and "API request to" not in str(err):
        return None
    text = " ".join(str(e) for e in chain).lower()
    for pattern, cause in _HTTP_CAUSES:
        if re.search(pattern, text):
            return cause
    return None


@contextlib.contextmanager
def _one_try(timeout: float) -> Iterator[None]:
    """MLflow's HTTP calls in this block: no retries of their own, and a request timeout of
    `timeout` (MLflow reads these variables at each request)."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(2, int(timeout)))}
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class BoundedClient:
    """An MlflowClient whose calls give up once its server has been unreachable for
    `wait_seconds` (module docstring); any other attribute is the client's own."""

    def __init__(self, client: Any, *, uri: str, wait_seconds: float,
                 say: Callable[[str], None] = lambda line: print(line, flush=True)):
        self._client, self._uri, self._wait, self._say = client, uri, float(wait_seconds), say
        self._down: str | None = None  # the message once the wait ran out: later calls fail at once

    def __getattr__(self, name: str) -> Any:
        member = getattr(self._client, name)
        return functools.partial(self._call, member) if callable(member) else member

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._down is not None:
            raise ServerUnreachable(self._down)
        deadline, told = time.monotonic() + self._wait, False
        while True:
            try:
                with _one_try(max(PROBE_SECONDS, deadline - time.monotonic())):
                    result = method(*args, **kwargs)
                if told:
                    self._say(f"mlflow  server {mask_secrets(self._uri)} is back")
                return result
            except Exception as err:
                cause = mlflow_unreachable_cause(err)
                if cause is None:
                    raise
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._down = (f"MLflow server {mask_secrets(self._uri)} unreachable for {self._wait:g} s "
                                  f"(tracking.server_wait_seconds): {cause}; the study's finished trials are kept "
                                  f"in its storage: run the same command again once the server is back (the "
                                  f"runs it missed are logged then)")
                    raise ServerUnreachable(self._down) from None
                if not told:
                    self._say(f"mlflow  server {mask_secrets(self._uri)} unreachable ({cause}); trying again for up "
                              f"to {self._wait:g} s (tracking.server_wait_seconds)")
                    told = True
                time.sleep(min(RETRY_SECONDS, remaining))


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    """`err` and the errors it was raised from or during (each once)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
