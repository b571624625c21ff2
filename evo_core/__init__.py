"""The core every search shares: one study lifecycle, registries, the objective contract, model
pool, study loop, tracking.

No search and no objective is known here (nothing imports evo_ps, evo_dfs, objectives or zoo):
they plug in as a `Search` object (see _lifecycle.py) and as entries of the registries.
"""
from __future__ import annotations

from ._cli import cli_main, run_cli
from ._files import atomic_dir, atomic_write_text
from ._config import ObjectiveConfig, SamplerConfig, StudyConfig, TrackingConfig, typed_config
from ._objective import OBJECTIVES, Metric, Objective, build_objective, mean_scores
from ._plots import plot_history
from ._pool import (ModelPool, check_device, check_finite, check_model_path, load_models, load_pool, model_fingerprint,
                    require_models)
from ._progress import Progress
from ._registry import Registry
from ._lifecycle import Phases, Search, check_signature, run_study
from ._study import (SAMPLERS, ParamSpec, best_trial, finished_trials, make_sampler, open_study, paper_popsize,
                     run_trials, start_point, wait_for_workers)
from ._tracking import Tracker, markdown_table, mlflow_ui_command
from ._weights import PROJECT_ROOT, project_path, register_resolvers, sqlite_url_in, use_weights

__all__ = [
    "Metric", "ModelPool", "Phases", "SAMPLERS", "Search", "OBJECTIVES", "Objective", "ObjectiveConfig", "PROJECT_ROOT", "ParamSpec", "Progress", "Registry", "SamplerConfig",
    "StudyConfig", "TrackingConfig", "Tracker", "atomic_dir", "atomic_write_text", "best_trial", "build_objective", "check_device", "check_finite", "check_model_path", "check_signature", "cli_main",
    "finished_trials", "load_models", "load_pool", "make_sampler", "markdown_table", "mean_scores", "mlflow_ui_command", "model_fingerprint",
    "open_study", "paper_popsize", "plot_history", "project_path", "register_resolvers", "require_models", "run_cli", "run_study",
    "run_trials", "sqlite_url_in", "start_point", "typed_config", "use_weights", "wait_for_workers",
]
