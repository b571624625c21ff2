"""The schema of `conf/dfs/config.yaml`: unknown keys and wrong types fail before any work.

Hydra composes the YAML; `validate(cfg)` merges it onto these dataclasses (OmegaConf structured
configs reject unknown keys and mistyped values) and checks what types can't. The objective,
sampler and tracking groups are shared with evo_ps (conf/); their schemas live in evo_core.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from evo_core import StudyConfig, typed_config
from evo_dfs._path import SCALE_MODELS

ENCODINGS = ("params", "genome")
# per-trial metrics a multi-objective search may minimise next to the objective's fitness
MINIMIZABLE = ("path_length", "unique_layers", "n_params")
# Optuna samplers that handle several objectives
MULTI_OBJECTIVE_SAMPLERS = ("nsga2", "tpe", "random")


@dataclass
class PoolConfig:
    sources: dict[str, str] = field(default_factory=dict)  # model A first
    made_by: dict[str, str] = field(default_factory=dict)  # source -> command that writes it
    dtype: str = "float32"
    device: str = "cpu"
    allow_pickle_weights: bool = False  # true: sources without safetensors load by torch.load(weights_only=True)


@dataclass
class SpaceConfig:
    repeats: int = 2
    scales: str = "matrix"
    wnet_hidden: int = 8
    indicator_init: float = 0.5
    encoding: str = "params"


@dataclass
class DFSConfig(StudyConfig):
    pool: PoolConfig = field(default_factory=PoolConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    minimize: list[str] = field(default_factory=list)

    @property
    def fitness(self) -> list[str]:
        """The study's objectives in order: the objective's fitness (maximised), then `minimize`."""
        return [self.objective.fitness, *self.minimize]

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * len(self.minimize)

    def check(self) -> None:
        super().check()
        space, sampler = self.space, self.sampler
        checks = [
            (bool(self.pool.sources), "pool.sources needs at least one source model (model A first)"),
            (set(self.pool.made_by) <= set(self.pool.sources),
             f"pool.made_by names {sorted(set(self.pool.made_by) - set(self.pool.sources))}, not in pool.sources"),
            (space.repeats >= 1, f"space.repeats must be >= 1; got {space.repeats}"),
            (space.scales in SCALE_MODELS, f"unknown space.scales {space.scales!r}; known: {', '.join(SCALE_MODELS)}"),
            (space.wnet_hidden >= 1, f"space.wnet_hidden must be >= 1; got {space.wnet_hidden}"),
            (0 < space.indicator_init <= 1, f"space.indicator_init must be in (0, 1]; got {space.indicator_init}"),
            (space.encoding in ENCODINGS,
             f"unknown space.encoding {space.encoding!r}; known: {', '.join(ENCODINGS)}"),
            (space.encoding != "genome" or sampler.kind == "cmaes",
             f"space.encoding=genome drives CMA-ES itself; it needs sampler=cmaes, not {sampler.kind!r}"),
            # racing steers the lifecycle's own CMA-ES; genome mode brings its own (else refused mid-study)
            (space.encoding != "genome" or self.evaluation.kind == "full",
             f"space.encoding=genome runs its own CMA-ES, which evaluation.kind={self.evaluation.kind} cannot steer; use "
             "space.encoding=params or evaluation.kind=full"),
            (set(self.minimize) <= set(MINIMIZABLE),
             f"minimize: unknown {sorted(set(self.minimize) - set(MINIMIZABLE))}; known: {', '.join(MINIMIZABLE)}"),
            (len(set(self.minimize)) == len(self.minimize), f"minimize lists a metric twice: {self.minimize}"),
            (not self.minimize or sampler.kind in MULTI_OBJECTIVE_SAMPLERS,
             f"minimize={self.minimize} makes several objectives; sampler {sampler.kind!r} optimises one "
             f"(use sampler=nsga2)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def validate(cfg: DictConfig) -> DFSConfig:
    """The composed config as a typed DFSConfig, or a one-line ValueError."""
    return typed_config(cfg, DFSConfig)
