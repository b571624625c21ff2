"""Outputs that are whole or absent, directories checked writable, and stores that several
workers may create at once.

    run_dir = writable_dir(cfg.run_dir, key="run_dir")   # else one PermissionError naming it

    with atomic_dir(run_dir / "best_model") as tmp:   # write everything into tmp ...
        model.save_pretrained(tmp)                    # ... it replaces best_model only when complete
    atomic_write_text(run_dir / "test_table.json", text)

    storage = open_store(url, lambda: optuna.storages.RDBStorage(url))   # safe when workers start together
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def writable_dir(path: str | Path, *, key: str) -> Path:
    """`path` as a directory this process can write into (created if missing), or an OSError naming
    it, why, and its config key (the CLI prints it as one line); SQLite would fail later with
    "unable to open database file" and no path. Root ignores permission bits, not a read-only
    mount (EROFS) nor an immutable directory: os.access sees both."""
    path = Path(path).resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise type(err)(err.errno, f"{err.strerror} ({key})", err.filename) from None
    if not os.access(path, os.W_OK):
        read_only = os.statvfs(path).f_flag & os.ST_RDONLY
        raise PermissionError(errno.EROFS if read_only else errno.EACCES,
                              f"{'not writable, a read-only file system' if read_only else 'not writable'} ({key})",
                              str(path))
    return path


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """A temporary directory next to `dest` (same filesystem, so the rename is atomic) that replaces
    `dest` once the block completes; if the block raises, it is removed and `dest` is untouched."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = dest.with_name(f".{dest.name}.tmp-{os.getpid()}"), dest.with_name(f".{dest.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of an earlier crash of this pid
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # a directory can't be renamed over a non-empty one: move the old one aside for that instant
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file whole or not at all (a crash mid-write leaves the previous version)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


SCHEMA_ATTEMPTS = 5


def open_store(url: str, create: Callable[[], T]) -> T:
    """`create()`: the first use of a database store (Optuna's, MLflow's), which creates or migrates
    its tables on a fresh database. Workers started together would all do that at once, and alembic
    and SQLAlchemy fail on the race ("table already exists", "duplicate column name"). SQLite: an
    exclusive lock on `<database>.lock` next to it while `create()` runs. PostgreSQL: a session
    advisory lock on the server, held the same way (so `create()` is also the only one to see an
    empty study, and enqueue its first trial). Other servers (MySQL) and HTTP stores: a few tries with
    backoff; a worker that lost the race succeeds once the tables exist."""
    if url.startswith("sqlite:///"):
        database = Path(url.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        # flock, not lockf: it also excludes threads of one process (each open() holds its own lock)
        with open(database.with_name(database.name + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                return create()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    if url.startswith("postgresql"):
        return _with_advisory_lock(url, create)
    for attempt in range(1, SCHEMA_ATTEMPTS):
        try:
            return create()
        except Exception as err:
            if not _looks_like_schema_race(err):
                raise
            time.sleep(0.5 * 2 ** attempt)
    return create()  # the last try: its error, if any, is the one reported


STORE_LOCK_KEY = 0x65766F6D  # "evom": the advisory lock every open_store on one PostgreSQL database takes


def _with_advisory_lock(url: str, create: Callable[[], T]) -> T:
    """`create()` while holding a PostgreSQL session advisory lock on `url`'s database (released
    when its connection closes, also when the process dies)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as con:
            con.execute(sqlalchemy.text("select pg_advisory_lock(:key)"), {"key": STORE_LOCK_KEY})
            try:
                return create()
            finally:
                con.execute(sqlalchemy.text("select pg_advisory_unlock(:key)"), {"key": STORE_LOCK_KEY})
    finally:
        engine.dispose()


def _looks_like_schema_race(err: BaseException | None) -> bool:
    """A SQLAlchemy or alembic error, also wrapped (e.g. in an MlflowException)."""
    while err is not None:
        if type(err).__module__.split(".")[0] in ("sqlalchemy", "alembic"):
            return True
        err = err.__cause__ or err.__context__
    return False


class NoSpaceLeft(BaseException):
    """A full disk met inside Optuna's trial loop (the study's storage could not be written),
    raised through it as this. Not an Exception: Optuna's catch=(Exception,) would fail the trial,
    log its traceback and go on to the next trial on the same full disk."""

    def __init__(self, cause: BaseException):
        super().__init__(disk_full_reason(cause) or str(cause))


# what the libraries say for ENOSPC when they do not raise the OSError itself: SQLite (through
# SQLAlchemy, wrapped again by Optuna as "invalid data ... exceeding max length"), safetensors'
# Rust I/O error ("No space left on device (os error 28)"), PostgreSQL ("could not extend file")
DISK_FULL_MESSAGES = ("database or disk is full", "no space left on device", "disk quota exceeded",
                      "could not extend file")


def disk_full_reason(err: BaseException | None) -> str | None:
    """Why `err` is a full disk (ENOSPC or EDQUOT, or a library's message for it, anywhere in its
    chain of causes and contexts), else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, NoSpaceLeft):
            return str(err)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{err.strerror}" + (f": {err.filename}" if err.filename else "")
        message = str(err).lower()
        for known in DISK_FULL_MESSAGES:
            if known in message:
                return str(err).splitlines()[0]
        err = err.__cause__ or err.__context__
    return None


def no_space_message(err: BaseException, *, where: str | Path | None) -> str | None:
    """The one line for a full disk: `no space left on <where> (<the library's words>)` and how to
    go on, else None (not a full disk)."""
    reason = disk_full_reason(err)
    if reason is None:
        return None
    return (f"no space left on {where or 'the disk'} ({reason}); free space (or choose another run_dir) and run the "
            f"same command again: finished trials are kept and the study resumes")


def quiet_full_disk_in_threads() -> None:
    """A thread that dies of a full disk (Optuna's heartbeat thread writes the storage at every
    trial's start) prints no traceback: the main thread meets the same full disk and reports it in
    its one line. Any other thread's death is printed as before. Process-wide: the CLI calls it."""
    default = threading.excepthook
    if getattr(default, "quiet_full_disk", False):
        return  # once per process (commands run in-process by the tests call it again)

    def hook(args: threading.ExceptHookArgs) -> None:
        if disk_full_reason(args.exc_value) is None:
            default(args)

    hook.quiet_full_disk = True
    threading.excepthook = hook
