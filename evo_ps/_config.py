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
    helper: bool = False
    helper_wait_minutes: float = 10.0


def validate(cfg: DictConfig) -> PSConfig:
    """The composed config as a typed PSConfig, or a one-line ValueError."""
    out = typed_config(cfg, PSConfig)
    if len(out.pool.sources) < 2:
        raise ValueError(f"pool.sources needs at least two source models; got {sorted(out.pool.sources)}")
    if out.n_trials < 1:
        raise ValueError(f"n_trials must be >= 1; got {out.n_trials}")
    if out.timeout_minutes is not None and out.timeout_minutes <= 0:
        raise ValueError(f"timeout_minutes must be > 0 or null; got {out.timeout_minutes}")
    if out.space.warm_start_trials < 0:
        raise ValueError(f"space.warm_start_trials must be >= 0; got {out.space.warm_start_trials}")
    if out.torch_threads is not None and out.torch_threads < 1:
        raise ValueError(f"torch_threads must be >= 1 or null; got {out.torch_threads}")
    if out.helper_wait_minutes <= 0:
        raise ValueError(f"helper_wait_minutes must be > 0; got {out.helper_wait_minutes}")
    if out.sampler.sigma0 is not None and out.sampler.sigma0 <= 0:
        raise ValueError(f"sampler.sigma0 must be > 0; got {out.sampler.sigma0}")
    return out
