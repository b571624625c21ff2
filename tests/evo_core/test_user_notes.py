"""What a user with a real model runs into, said in one line: a study where nothing scores above 0,
racing that cannot stop anyone early, a CMA-ES population too small to recombine."""
from __future__ import annotations

import optuna
import pytest

from evo_core import StudyConfig
from evo_core._config import EvaluationConfig
from evo_core._lifecycle import racing_note
from evo_core._progress import ZERO_NOTE_TRIALS, Progress

NOTE = "note    no trial has scored above 0 on acc_ja after"


def run_trials(values: list[float], capsys) -> list[str]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    progress = Progress(n_trials=len(values), fitness="acc_ja")
    for value in values:
        study.enqueue_trial({"x": 0.5})
        study.optimize(lambda trial: (trial.suggest_float("x", 0, 1), value)[1], n_trials=1, callbacks=[progress])
    return capsys.readouterr().out.splitlines()


def test_all_zero_trials_get_one_note_after_the_threshold(capsys):
    lines = run_trials([0.0] * (ZERO_NOTE_TRIALS + 5), capsys)
    notes = [i for i, line in enumerate(lines) if line.startswith(NOTE)]
    assert len(notes) == 1, lines
    # right after trial N
    assert lines[notes[0] - 1].startswith(f"trial {ZERO_NOTE_TRIALS - 1:4d} ({ZERO_NOTE_TRIALS}/")
    assert f"after {ZERO_NOTE_TRIALS} trials" in lines[notes[0]] and "samples/" in lines[notes[0]]


def test_one_trial_above_zero_means_no_note(capsys):
    values = [0.0] * (ZERO_NOTE_TRIALS + 5)
    values[7] = 0.01
    assert not [line for line in run_trials(values, capsys) if line.startswith("note")]


@pytest.mark.parametrize("kind, n_search, first_block, noted", [
    ("racing", 20, 30, True), ("racing", 30, 30, True), ("racing", 150, 30, False), ("full", 20, 30, False),
    ("racing", None, 30, False),
])
def test_racing_that_cannot_stop_anyone_says_so(capsys, kind, n_search, first_block, noted):
    racing_note(EvaluationConfig(kind=kind, first_block=first_block), n_search)
    out = capsys.readouterr().out
    assert out.count("\n") == (1 if noted else 0)
    if noted:
        assert out.startswith(f"note    evaluation=racing changes nothing here: the search split has {n_search} items "
                              f"and evaluation.first_block={first_block}")


@pytest.mark.parametrize("kind, popsize, ok", [("cmaes", 3, False), ("cmaes", 2, False), ("cmaes", 4, True),
                                               ("cmaes", None, True), ("nsga2", 3, True)])
def test_cmaes_popsize_below_4_is_refused(kind, popsize, ok):
    cfg = StudyConfig(study_name="s", run_dir="r")
    cfg.sampler.kind, cfg.sampler.popsize = kind, popsize
    if ok:
        cfg.check()
    else:
        with pytest.raises(ValueError, match=rf"^sampler.popsize must be >= 4 with sampler.kind=cmaes .* "
                                             rf"got {popsize};"):
            cfg.check()
