"""The offer log: how several workers (`helper=true`, other processes, other machines) breed into
one archive. The archive is a replica each worker keeps in its own run_dir (evo_breed/_archive.py);
what they share is the study, and in it the log of offers, in the order they were made:

    study user attr  "offer:000017" = ["<phase study name>", <trial number>]    the 18th offer

An offer is one insert, made under a lock that every worker of the study takes (`offer_lock`):
- SQLite: an exclusive `flock` on `<database>.offers-<study_name>.lock` next to the database file;
- PostgreSQL: a session advisory lock (OFFER_LOCK_CLASS, a key of the study's name) on a
  connection of its own, for the length of the offers;
both are released by the OS or the server when their holder dies (kill -9 included). Under the
lock a worker reads the log, so its sequence numbers never collide and a trial is never offered
twice; an insert is whole or absent, so no offer is written half. The archive is, by construction,
the replay of the log in order: each worker's replica applies the entries it lacks, the same rule
in the same order (a replica behind, or one killed between the insert and its own update, catches
up on the next read). Other storages (MySQL) have no lock here: one worker only.
"""
from __future__ import annotations

import contextlib
import fcntl
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna

OFFER_LOCK_CLASS = 0x65766F62  # "evob": the first key of every offer lock (PostgreSQL advisory lock)
PREFIX = "offer:"


def offer_key(seq: int) -> str:
    return f"{PREFIX}{seq:06d}"


def read_log(study: optuna.Study) -> list[tuple[str, int]]:
    """The offers recorded on `study` (the main study), in order: (phase study name, trial number)."""
    entries = sorted((key, value) for key, value in study.user_attrs.items() if key.startswith(PREFIX))
    log = [(str(phase), int(number)) for _, (phase, number) in entries]
    gaps = [key for seq, (key, _) in enumerate(entries) if key != offer_key(seq)]
    if gaps:  # only written under the lock, one after the other: a gap is a hand edit
        raise ValueError(f"study {study.study_name!r}: its offer log skips before {gaps[0]}; the study was changed "
                         f"by hand: use another study_name")
    return log


def record(study: optuna.Study, seq: int, phase: str, number: int) -> None:
    """The offer number `seq` (called under offer_lock, with seq = the log's length)."""
    study.set_user_attr(offer_key(seq), [phase, number])


def has_lock(storage: str) -> bool:
    return storage.startswith(("sqlite:///", "postgresql"))


@contextlib.contextmanager
def offer_lock(storage: str, study_name: str) -> Iterator[None]:
    """Hold the study's offer lock (module docstring) for the block, waiting for it if another
    worker holds it; on a storage without one (MySQL), nothing."""
    if storage.startswith("sqlite:///"):
        database = Path(storage.removeprefix("sqlite:///"))
        name = re.sub(r"[^\w.-]", "_", study_name)
        with open(database.with_name(f"{database.name}.offers-{name}.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            yield
    elif storage.startswith("postgresql"):
        import sqlalchemy

        key = {"cls": OFFER_LOCK_CLASS, "key": zlib.crc32(study_name.encode()) & 0x7FFFFFFF}
        engine = sqlalchemy.create_engine(storage, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as con:
                con.execute(sqlalchemy.text("select pg_advisory_lock(:cls, :key)"), key)
                try:
                    yield
                finally:
                    con.execute(sqlalchemy.text("select pg_advisory_unlock(:cls, :key)"), key)
        finally:
            engine.dispose()
    else:
        yield
