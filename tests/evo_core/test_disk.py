"""Issue 21: a read-only run_dir and a full disk, each provoked for real and ended by one `error:`
line, the state checked after.

We run as root, and root ignores permission bits: what really stops root is a read-only mount
(EROFS) or a filesystem without space (ENOSPC). Each case runs the real CLI in a user + mount
namespace (`unshare -Urm`) where a tmpfs is mounted on run_dir (read-only, or a few hundred KiB);
nothing outside the namespace sees the mount. MLflow's store stays outside it, so its run can be
checked after. A machine without `unshare` or user namespaces FAILS these tests with one line
naming what is missing.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.evo_core.test_faults import tiny_study

REPO_ROOT = Path(__file__).resolve().parents[2]


def in_namespace(script: str, *, timeout: float = 900) -> subprocess.CompletedProcess:
    """`sh -c script` as root of a new user + mount namespace; what a user would see of it."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare not found: install util-linux (the disk tests mount a tmpfs in a user namespace)",
                    pytrace=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(["unshare", "-Urm", "sh", "-c", script], cwd=REPO_ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def mounted(run_dir: Path, options: str) -> str:
    """Shell that mounts a tmpfs with `options` on run_dir (created empty), or fails the test in one
    line naming what the machine lacks."""
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = in_namespace(f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(run_dir))}")
    if probe.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs in a user namespace (unshare -Urm; kernel.unprivileged_userns_clone or "
                    f"a container without CAP_SYS_ADMIN?): {probe.stderr.strip()}", pytrace=False)
    return f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(run_dir))}"


def cli(*overrides: str) -> str:
    return shlex.join([sys.executable, "-m", "evo_ps", *overrides])


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The failed command's only `error:` line; no traceback, no Optuna warning printed before it."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr and "[W " not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


def parent_run_states(mlruns: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("evo_ps").experiment_id])
    return [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags]


def trial_states(run_dir: Path) -> list[str]:
    with sqlite3.connect(run_dir / "study.db") as con:
        return [state for (state,) in con.execute("select state from trials order by number")]


@pytest.mark.slow
def test_a_read_only_run_dir_is_one_line_before_hydra_writes_there(tmp_path, tiny_model_dirs):
    run_dir = tmp_path / "run"
    mount = mounted(run_dir, "ro")
    for target in (run_dir, run_dir / "new"):  # an existing directory, and one to create under it
        started = time.perf_counter()
        proc = in_namespace(f"{mount} && exec {cli(*tiny_study(tmp_path, tiny_model_dirs), f'run_dir={target}')}")
        line = one_error_line(proc)
        assert line.startswith(f"error: {target}: ") and "(run_dir)" in line, line
        assert "ead-only file system" in line, line  # EROFS named as such
        assert "Unable to configure handler" not in proc.stderr
        print(f"{target.name}: refused in {time.perf_counter() - started:.1f} s (interpreter start included)")
    assert not (tmp_path / "mlruns").exists(), "refused before anything was created"


@pytest.mark.slow
def test_a_disk_full_from_the_start_is_one_line_before_hydra_writes_there(tmp_path, tiny_model_dirs):
    run_dir = tmp_path / "run"
    proc = in_namespace(f"{mounted(run_dir, 'size=16k')} && exec {cli(*tiny_study(tmp_path, tiny_model_dirs))}")
    assert one_error_line(proc).startswith(f"error: no space left on {run_dir} (16 KiB free); "), proc.stderr
    assert not (tmp_path / "mlruns").exists()


# tmpfs sizes: the empty study.db with its first trials is ~120 KiB and grows ~4 KiB a trial (the
# tiny study, 4 items); Hydra's .hydra/ takes ~20 KiB; best_model/ is ~750 KiB (tiny_model_dirs)
MID_RUN_KIB, MID_RUN_TRIALS = 200, 40  # the database fills after ~15 trials
AT_SAVE_KIB, AT_SAVE_TRIALS = 400, 2   # every trial fits, the model does not


@pytest.mark.slow
@pytest.mark.parametrize("size_kib, n_trials, where", [(MID_RUN_KIB, MID_RUN_TRIALS, "mid-run"),
                                                     (AT_SAVE_KIB, AT_SAVE_TRIALS, "at save")])
def test_a_full_disk_is_one_line_and_the_study_resumes_with_space(tmp_path, tiny_model_dirs, run_cli, size_kib,
                                                                  n_trials, where):
    run_dir, kept = tmp_path / "run", tmp_path / "kept"
    study = [*tiny_study(tmp_path, tiny_model_dirs), f"n_trials={n_trials}"]
    mount = mounted(run_dir, f"size={size_kib}k")
    # the tmpfs's content is copied out before the namespace (and its mount) ends
    proc = in_namespace(f"{mount} && {cli(*study)}; rc=$?; cp -a {run_dir} {kept}; exit $rc")
    line = one_error_line(proc)
    assert line.startswith(f"error: no space left on {run_dir} ("), line
    states = trial_states(kept)
    complete = states.count("COMPLETE")
    # the trial that met the full disk: told FAIL if the storage took that write, else left RUNNING
    # for the heartbeat to fail and retry at its point when the study resumes
    assert states[complete:] in ([], ["FAIL"], ["RUNNING"]), states
    reported = re.findall(r"^trial +\d+ .* acc_ja ", proc.stdout, flags=re.M)
    assert complete == len(reported), "every trial reported finished is kept"
    if where == "mid-run":
        assert 0 < complete < n_trials and len(states) == complete + 1 and "export" not in proc.stdout, states
    else:
        assert complete == n_trials and "export  writing best_model" in proc.stdout, proc.stdout[-1500:]
    assert sorted(p.name for p in kept.iterdir() if "best_model" in p.name or p.name == "test_table.json") == []
    assert parent_run_states(tmp_path / "mlruns") == ["FAILED"]

    # with space (the same files on the ordinary disk), the same command resumes and completes
    resumed = run_cli("evo_ps", *study, f"run_dir={kept}")
    assert f"outputs: {kept}" in resumed.stdout
    assert trial_states(kept).count("COMPLETE") == n_trials - (len(states) - complete)
    assert (kept / "best_model" / "model.safetensors").exists() and (kept / "test_table.json").exists()
    assert parent_run_states(tmp_path / "mlruns") == ["FINISHED"]
