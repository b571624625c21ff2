"""The core every search shares: one study lifecycle, registries, the objective contract, model
pool, study loop, tracking.

No search and no objective is known here (nothing imports evo_ps, evo_dfs, objectives or zoo):
they plug in as a `Search` object (see _lifecycle.py) and as entries of the registries.
"""
from __future__ import annotations

from ._adapters import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, check_adapter_sources, read_adapter_config,
                        read_adapter_weights, resolve_adapter_sources)
from ._cli import cli_main, run_cli
from ._config import EvaluationConfig, ObjectiveConfig, SamplerConfig, StudyConfig, TrackingConfig, typed_config
from ._files import atomic_dir, atomic_write_text
from ._fingerprint import model_fingerprint
from ._genome import GenomeCMA, GenomeSpace, pack_genome, unpack_genome
from ._lifecycle import Best, Phases, Scored, Search, check_signature, read_test_tables, run_study
from ._model_checks import check_device, check_finite, check_model_path, require_models
from ._objective import (OBJECTIVES, Metric, Objective, ObjectiveDefaults, build_objective, make_objective,
                         mean_scores, objective_options, table_splits, with_defaults)
from ._paths import PROJECT_ROOT, project_path, register_resolvers, sqlite_url_in
from ._plots import plot_history
from ._pool import ModelPool, load_models, load_pool, use_weights
from ._progress import Progress, report_progress
from ._publish import name_models_in_configs, published_name
from ._fidelity import spearman
from ._racing import race
from ._registry import Registry
from ._study import (SAMPLERS, ParamSpec, best_trial, finished_trials, killed_trials, make_sampler, open_study,
                     paper_popsize, run_trials, start_point, wait_for_workers)
from ._tracking import Tracker, markdown_table, mlflow_ui_command
from ._vlm import is_vision_language, language_model_params, vision_language_sources

__all__ = [
    "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "check_adapter_sources", "read_adapter_config", "read_adapter_weights",
    "resolve_adapter_sources", "atomic_dir", "atomic_write_text", "Best", "best_trial", "build_objective", "check_device", "check_finite",
    "check_model_path", "check_signature", "cli_main", "EvaluationConfig", "finished_trials", "GenomeCMA", "killed_trials",
    "GenomeSpace", "is_vision_language", "language_model_params", "load_models", "load_pool", "make_sampler",
    "make_objective", "markdown_table", "mean_scores", "Metric", "name_models_in_configs", "mlflow_ui_command", "model_fingerprint", "ModelPool", "Objective", "ObjectiveDefaults",
    "objective_options", "ObjectiveConfig", "OBJECTIVES", "open_study", "pack_genome", "paper_popsize", "ParamSpec",
    "Phases", "plot_history", "Progress", "project_path", "PROJECT_ROOT", "published_name", "race", "read_test_tables", "spearman", "register_resolvers", "Registry",
    "report_progress", "require_models", "run_cli", "run_study", "run_trials", "SamplerConfig", "SAMPLERS", "Scored", "Search", "sqlite_url_in",
    "start_point", "StudyConfig", "table_splits", "Tracker", "TrackingConfig", "typed_config", "unpack_genome", "use_weights",
    "vision_language_sources", "wait_for_workers", "with_defaults",
]
