"""Shared core of both searches: model pool, study loop, tracking, export helpers.

Neither search is known here; `evo_ps` and `evo_dfs` build on this small surface.
"""
from __future__ import annotations

from ._cli import run_cli
from ._config import (ObjectiveConfig, SamplerConfig, StudyConfig, TrackingConfig, build_objective,
                      typed_config)
from ._plots import plot_history
from ._pool import ModelPool, check_model_path, load_models, load_pool, require_models
from ._progress import Progress
from ._registry import Registry
from ._study import (ParamSpec, best_trial, finished_trials, make_sampler, open_study, paper_popsize,
                     run_trials, start_point, wait_for_workers)
from ._tracking import Tracker, markdown_table, mlflow_ui_command
from ._weights import PROJECT_ROOT, project_path, sqlite_url_in, use_weights

__all__ = [
    "ModelPool", "ObjectiveConfig", "PROJECT_ROOT", "ParamSpec", "Progress", "Registry", "SamplerConfig",
    "StudyConfig", "TrackingConfig", "Tracker", "best_trial", "build_objective", "check_model_path",
    "finished_trials", "load_models", "load_pool", "make_sampler", "markdown_table", "mlflow_ui_command",
    "open_study", "paper_popsize", "plot_history", "project_path", "require_models", "run_cli",
    "run_trials", "sqlite_url_in", "start_point", "typed_config", "use_weights", "wait_for_workers",
]
