"""One primary per study: a second `python -m <search>` (helper=false) on a run_dir or a study
another primary is running is refused in one line, before it loads a model.

    with primary_lock(run_dir=run_dir, storage=storage, study_name=name):   # else PrimaryRunning
        ...the whole primary run...

Two primaries of one study would both write the test table (logged twice into one MLflow run)
and best_model/ at once. The locks are ones the OS or the server releases when their holder dies
(kill -9 included), so a primary that died never blocks its restart:
- run_dir: an exclusive `flock` on `run_dir/primary.lock` (what any two primaries writing the
  same best_model/ share, whatever their storage);
- a SQLite storage: a `flock` on `<database>.primary-<study_name>.lock` next to it (primaries
  with other run_dirs may share one database file);
- a PostgreSQL storage: a session advisory lock on the server, keyed by the study's name, on a
  connection of its own held for the run (its application_name names the holder);
- other storages (MySQL): the run_dir lock only.
Each lock file holds `<host>:<pid> since <UTC time>` of its holder, to name it in the refusal.
Helpers (helper=true) take no lock: they are how a study gets more workers.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import re
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

PRIMARY_LOCK_CLASS = 0x65766F70  # "evop": the first key of every primary's advisory lock (PostgreSQL)


class PrimaryRunning(ValueError):
    """Another primary holds the study or the run_dir (a ValueError: the CLI prints it as one line)."""


def advisory_key(study_name: str) -> dict[str, int]:
    """The two int4 keys of a study's primary advisory lock (as pg_locks shows them: classid, objid)."""
    return {"cls": PRIMARY_LOCK_CLASS, "key": zlib.crc32(study_name.encode()) & 0x7FFFFFFF}


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def refusal(study_name: str, place: str, holder: str) -> PrimaryRunning:
    return PrimaryRunning(f"study {study_name!r}: another primary is running on {place}: {holder}; to add a worker "
                          f"to it, run the same command with helper=true (or, for a study of its own, another "
                          f"run_dir and study_name)")


@contextlib.contextmanager
def primary_lock(*, run_dir: Path, storage: str, study_name: str, shown_storage: str) -> Iterator[None]:
    """Hold the study's primary locks (module docstring) for the block, or raise PrimaryRunning
    naming the running primary; `shown_storage`: the storage as messages show it (no password)."""
    with contextlib.ExitStack() as held:
        held.enter_context(file_lock(Path(run_dir) / "primary.lock", study_name=study_name,
                                     place=f"run_dir {run_dir}"))
        if storage.startswith("sqlite:///"):
            database = Path(storage.removeprefix("sqlite:///"))
            name = re.sub(r"[^\w.-]", "_", study_name)
            held.enter_context(file_lock(database.with_name(f"{database.name}.primary-{name}.lock"),
                                         study_name=study_name, place=f"storage {shown_storage}"))
        elif storage.startswith("postgresql"):
            held.enter_context(advisory_lock(storage, study_name=study_name, place=f"storage {shown_storage}"))
        yield


@contextlib.contextmanager
def file_lock(path: Path, *, study_name: str, place: str) -> Iterator[None]:
    """An exclusive flock on `path`, its holder written into it; closing the file releases it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise refusal(study_name, place, handle.read().strip() or "a process that has not named itself yet") \
                from None
        handle.seek(0)
        handle.truncate()
        since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        handle.write(f"{this_worker()} since {since}\n")
        handle.flush()
        yield


@contextlib.contextmanager
def advisory_lock(url: str, *, study_name: str, place: str) -> Iterator[None]:
    """A PostgreSQL session advisory lock (PRIMARY_LOCK_CLASS, a key of `study_name`) on a
    connection of its own, autocommit (never idle in a transaction for the hours of a run); the
    server releases it when that connection ends, also when this process dies."""
    import sqlalchemy

    key = advisory_key(study_name)
    # the name pg_stat_activity shows for this connection: how a refused primary names this one
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                      connect_args={"application_name": f"evomerge primary {this_worker()}"[:63]})
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as con:
            holder = None
            for _ in range(2):  # a holder killed a moment ago: its backend may still be ending
                if con.execute(sqlalchemy.text("select pg_try_advisory_lock(:cls, :key)"), key).scalar():
                    break
                holder = con.execute(sqlalchemy.text(
                    "select a.application_name, a.backend_start from pg_locks l join pg_stat_activity a "
                    "on a.pid = l.pid where l.locktype = 'advisory' and l.classid = :cls and l.objid = :key "
                    "and l.objsubid = 2 and l.granted"), key).first()
                if holder is not None:
                    name, since = holder[0].removeprefix("evomerge primary "), holder[1].astimezone(datetime.timezone.utc)
                    raise refusal(study_name, place, f"{name} since {since:%Y-%m-%d %H:%M:%S UTC}")
                time.sleep(1.0)
            else:
                raise refusal(study_name, place, "a connection that held it until a moment ago")
            yield
    finally:
        engine.dispose()
