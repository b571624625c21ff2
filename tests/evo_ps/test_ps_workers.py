"""`python -m evo_ps` under abuse: killed (SIGKILL) at random moments and restarted, and several
workers started at once on fresh stores. Nothing may be lost or counted twice: every finished trial
has exactly one MLflow nested run, and the study's size stays within what its retries explain.
Every wait is on an event (a trial count in study.db, a process exit); pytest-timeout bounds them."""
from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter

import pytest
from optuna.trial import TrialState

from test_ps_cli import PHASES, check_mlflow, count_trials, start_cli, study, wait_for

KILLS = 3


def check_no_repeated_samples(trials) -> None:
    """No parameter set completed twice: a sampler proposes each point once, and a heartbeat retry
    repeats only a trial that FAILed."""
    repeated = Counter(tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE)
    assert max(repeated.values()) == 1, "a sample completed twice"


def check_outputs(tmp_path) -> None:
    assert (tmp_path / "run" / "best_model" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "test_table.json").is_file()


@pytest.mark.slow
def test_killed_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    n_trials, rng = 10, random.Random(1)
    db = tmp_path / "run" / "study.db"
    with open(tmp_path / "runs.log", "a") as log:  # the killed runs' output, for a failure's message
        for _ in range(KILLS):
            # a random moment: k = 0, during start-up (study.db opened: MLflow starting, the study
            # resuming); k > 0, within or after the k-th trial this run creates
            created, k = count_trials(tmp_path, studies=PHASES, states=None), rng.randint(0, 3)
            proc = start_cli(tmp_path, f"n_trials={n_trials}", stdout=log)
            wait_for(proc, lambda: db.exists() and count_trials(tmp_path, studies=PHASES, states=None) >= created + k)
            time.sleep(rng.uniform(0, 3 if k == 0 else 0.5))
            assert proc.poll() is None, "the study ended before its kill"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    final = start_cli(tmp_path, f"n_trials={n_trials}")
    out = final.communicate()[0]
    assert final.returncode == 0, out[-3000:]
    assert "| best_merge |" in out

    trials = study(tmp_path).trials
    finished = [t for t in trials if t.state.is_finished()]
    # a trial killed while running is FAILed by the heartbeat (it counts as finished) and retried
    # once with the same parameters, so each kill may add one finished trial beyond n_trials
    assert n_trials <= len(finished) <= n_trials + KILLS, [t.state.name for t in trials]
    for name in PHASES:  # no trial is left RUNNING by a dead process, in any phase
        assert not [t.number for t in study(tmp_path, name).trials if t.state == TrialState.RUNNING], name
    check_no_repeated_samples(trials)
    check_mlflow(tmp_path)
    check_outputs(tmp_path)


@pytest.mark.slow
def test_primary_and_helpers_started_together_on_fresh_stores(tmp_path):
    # no study.db, no mlruns yet: all four create or open the stores at the same moment
    n_trials, helpers = 12, 3
    workers = [start_cli(tmp_path, f"n_trials={n_trials}")]
    workers += [start_cli(tmp_path, f"n_trials={n_trials}", "helper=true", "helper_wait_minutes=60")
                for _ in range(helpers)]
    outputs = [worker.communicate()[0] for worker in workers]
    for worker, out in zip(workers, outputs):
        assert worker.returncode == 0, out[-3000:]
    assert "| best_merge |" in outputs[0]
    assert all("helper  done" in out and "| best_merge |" not in out for out in outputs[1:])

    trials = study(tmp_path).trials
    finished = [t for t in trials if t.state.is_finished()]
    # each worker stops once the study holds n_trials finished; the others' running trials may add one each
    assert n_trials <= len(finished) <= n_trials + helpers, [t.state.name for t in trials]
    assert len({t.user_attrs["worker"] for t in finished}) >= 2
    check_no_repeated_samples(trials)
    check_mlflow(tmp_path)
    check_outputs(tmp_path)
