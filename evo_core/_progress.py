"""Terminal progress: one line per finished trial, with the best so far."""
from __future__ import annotations

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
