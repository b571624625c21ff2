"""The schema of `conf/config.yaml`: unknown keys and wrong types fail before any work.

Hydra composes the YAML; `validate(cfg)` merges it onto these dataclasses (OmegaConf structured
configs reject unknown keys and mistyped values) and checks the values that types can't.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig

from evo_core import StudyConfig, typed_config


@dataclass
class PoolConfig:
    base: str = "???"
    sources: dict[str, str] = field(default_factory=dict)
    dtype: str = "float32"
    device: str = "cpu"
    allow_pickle_weights: bool = False  # true: sources without safetensors load by torch.load(weights_only=True)


@dataclass
class MergeConfig:
    method: str = "dare_ties"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SpaceConfig:
    uniform: bool = False
    granularity: int = 1
    split_components: bool = False
    bounds: dict[str, Any] = field(default_factory=dict)  # checked by build_space
    warm_start_trials: int = 0
    warm_start_sigma0: Optional[float] = None


@dataclass
class PSConfig(StudyConfig):
    pool: PoolConfig = field(default_factory=PoolConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)

    def check(self) -> None:
        super().check()
        if len(self.pool.sources) < 2:
            raise ValueError(f"pool.sources needs at least two source models; got {sorted(self.pool.sources)}")
        if self.space.warm_start_trials < 0:
            raise ValueError(f"space.warm_start_trials must be >= 0; got {self.space.warm_start_trials}")


def validate(cfg: DictConfig) -> PSConfig:
    """The composed config as a typed PSConfig, or a one-line ValueError."""
    return typed_config(cfg, PSConfig)
