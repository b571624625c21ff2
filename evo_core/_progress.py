"""Terminal progress: one line per finished trial, with the best so far; and lines around the long
steps after the search (each test-table row, the export), fed from inside a scoring loop by
report_progress."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import optuna
from optuna.trial import FrozenTrial

from ._study import best_trial


# after this many finished trials of a phase with none above 0, one note says what that usually means
ZERO_NOTE_TRIALS = 20


class Progress:
    """Optuna callback printing `trial 12/120  acc_ja 0.340  best 0.367 (#7)  merge 0.05s eval 2.1s`,
    and once, when ZERO_NOTE_TRIALS trials have finished and none scored above 0, a note: on a real
    model that is nearly always the prompt or the answer format, not the search."""

    def __init__(self, *, n_trials: int, fitness: str):
        self.n_trials, self.fitness = n_trials, fitness
        self.noted_zeros = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        if trial.state.name != "COMPLETE":
            print(f"trial {trial.number:4d} ({done}/{self.n_trials})  {trial.state.name}", flush=True)
            return
        timing = "  ".join(f"{k.split('_')[0]} {v:.2f}s" for k, v in trial.user_attrs.items()
                           if k.endswith("_seconds") and k != "trial_seconds")
        best = best_trial(study)  # the first objective for multi-objective studies
        print(f"trial {trial.number:4d} ({done}/{self.n_trials})  {self.fitness} {trial.values[0]:.3f}  "
              f"best {best.values[0]:.3f} (#{best.number})  {timing}", flush=True)
        if not self.noted_zeros and done >= ZERO_NOTE_TRIALS and best.values[0] <= 0:
            self.noted_zeros = True
            print(f"note    no trial has scored above 0 on {self.fitness} after {done} trials: the merges may not "
                  f"answer in the form the objective reads (prompt template, chat_template, answer extraction, "
                  f"language). Run n_trials=1 and read the base and source rows of the test table and samples/ "
                  f"(docs/faults.md)", flush=True)


# -- progress inside a long scoring call --------------------------------------------------------

_LISTENER: ContextVar[Callable[[int, int], None] | None] = ContextVar("evo_core_progress", default=None)


def report_progress(done: int, total: int) -> None:
    """What a long scoring loop calls after each batch: `done` of its `total` items so far. It
    prints nothing: the call reaches whoever listens (the lifecycle, while it scores the test
    table: progress_lines), and costs one lookup otherwise (a trial's scoring has no listener)."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(done, total)


@contextlib.contextmanager
def progress_lines(prefix: str, what: str, *, every: float) -> Iterator[None]:
    """Lines around a long step, so that it cannot be taken for a hang:
    `table   base on test ...` now, `table   base on test: 96/250 items, 2.5 min` as report_progress
    hears (at most one line per `every` seconds), and `table   base on test: done in 12.3 s` at the end."""
    started = last = time.monotonic()
    print(f"{prefix:<7} {what} ...", flush=True)

    def listen(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= every:
            last = now
            print(f"{prefix:<7} {what}: {done}/{total} items, {(now - started) / 60:.1f} min", flush=True)

    token = _LISTENER.set(listen)
    try:
        yield
    finally:
        _LISTENER.reset(token)
    print(f"{prefix:<7} {what}: done in {time.monotonic() - started:.1f} s", flush=True)
