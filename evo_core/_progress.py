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


class Progress:
    """Optuna callback printing `trial 12/120  acc_ja 0.340  best 0.367 (#7)  merge 0.05s eval 2.1s`."""

    def __init__(self, *, n_trials: int, fitness: str):
        self.n_trials, self.fitness = n_trials, fitness

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
