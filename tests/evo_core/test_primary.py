"""Issue 21: one primary per study. A second primary (helper=false) on the run_dir or the storage
of a running one is refused in one line naming it, before it loads a model; the running one
killed with -9, a restart is never refused. The same on PostgreSQL: tests/scale/test_primary_lock.py."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.evo_core.test_faults import tiny_study

REPO_ROOT = Path(__file__).resolve().parents[2]


def start_primary(overrides: list[str]) -> subprocess.Popen:
    """The first primary, `python -m evo_ps`, in a process of its own (it is killed later)."""
    return subprocess.Popen([sys.executable, "-m", "evo_ps", *overrides], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})


def second_primaries_are_refused_until_the_first_dies(run_cli, error_line, *, first: list[str],
                                                      seconds: dict[str, list[str]],
                                                      held: Callable[[int], bool]) -> None:
    """Start the primary `first`; once `held(its pid)` says it holds its lock, stop it there (SIGSTOP:
    it still holds the lock, and runs no trial the restart would wait 30 s for the heartbeat of);
    each of `seconds` (name -> overrides; the same study) must be refused in one line naming it,
    before any model loads; then kill -9 the first: the same command restarted completes."""
    primary = start_primary([*first, "n_trials=200"])
    try:
        deadline = time.monotonic() + 300
        while not held(primary.pid):
            assert primary.poll() is None, f"the first primary ended ({primary.returncode}):\n{primary.stdout.read()}"
            assert time.monotonic() < deadline, "the first primary never took its lock"
            time.sleep(0.02)
        os.kill(primary.pid, signal.SIGSTOP)
        for name, overrides in seconds.items():
            started = time.perf_counter()
            proc = run_cli("evo_ps", *overrides, ok=False)
            took = time.perf_counter() - started
            line = error_line(proc)
            assert re.search(rf"another primary is running on .*: {re.escape(socket.gethostname())}:{primary.pid} "
                             rf"since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC; .*helper=true", line), line
            assert "space " not in proc.stdout and "study " not in proc.stdout, "refused before loading models"
            print(f"{name}: refused in {took:.2f} s: {line}")
    finally:
        primary.kill()  # SIGKILL, also of a stopped process: the OS (or the server) releases its lock
        primary.wait()
    started = time.perf_counter()
    restarted = run_cli("evo_ps", *first, "n_trials=2")
    assert "outputs:" in restarted.stdout
    print(f"restart after kill -9: completed in {time.perf_counter() - started:.1f} s")


@pytest.mark.slow
def test_a_second_primary_on_the_run_dir_or_the_sqlite_file_is_refused_and_a_killed_one_never_blocks(
        tmp_path, tiny_model_dirs, run_cli, error_line):
    first = tiny_study(tmp_path, tiny_model_dirs)
    run_dir = tmp_path / "run"
    lock = run_dir / "primary.lock"
    second_primaries_are_refused_until_the_first_dies(
        run_cli, error_line, first=first,
        seconds={"same run_dir": first,
                 "same SQLite file, another run_dir": [*first, f"run_dir={tmp_path / 'other'}",
                                                       f"tracking.storage=sqlite:///{run_dir / 'study.db'}"]},
        held=lambda pid: lock.exists() and f":{pid} since" in lock.read_text())


def test_the_lock_is_refused_while_held_and_released_after(tmp_path):
    from evo_core._primary import PrimaryRunning, primary_lock

    lock = dict(run_dir=tmp_path, storage=f"sqlite:///{tmp_path / 'db' / 'study.db'}", study_name="s/1",
                shown_storage="the db")
    with primary_lock(**lock):
        with pytest.raises(PrimaryRunning, match=f"on run_dir {tmp_path}: {socket.gethostname()}:{os.getpid()} since"):
            with primary_lock(**lock):
                pass
        with pytest.raises(PrimaryRunning, match=f"on storage the db: {socket.gethostname()}:{os.getpid()} since"):
            with primary_lock(**(lock | {"run_dir": tmp_path / "other"})):
                pass
    with primary_lock(**lock):  # released when the block ended
        assert (tmp_path / "db" / "study.db.primary-s_1.lock").exists() and (tmp_path / "primary.lock").exists()
