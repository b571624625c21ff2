"""Config schema parts both searches share (the `objective`, `sampler` and `tracking` groups of
conf/), the typed merge that makes configs strict, and the objective a config group describes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

Schema = TypeVar("Schema")


@dataclass
class ObjectiveConfig:
    name: str = "mgsm_ja"
    fitness: str = "acc_ja"
    prompt_template: str = "???"
    search: Any = field(default_factory=dict)  # a split spec (dict) or a local file path (str)
    test: Any = field(default_factory=dict)
    max_new_tokens: int = 40
    stop_strings: list[str] = field(default_factory=list)
    batch_size: int = 16
    language_detector: str = "fasttext"
    allow_overlap: bool = False


@dataclass
class SamplerConfig:
    kind: str = "cmaes"
    sigma0: Optional[float] = None
    popsize: Optional[int] = None
    separable: bool = False


@dataclass
class TrackingConfig:
    storage: Optional[str] = None
    mlruns_dir: str = "mlruns"
    experiment: str = "evo_ps"


@dataclass
class StudyConfig:
    """What every search's top-level config has besides its own groups."""

    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    study_name: str = "???"
    seed: int = 0
    n_trials: int = 100
    timeout_minutes: Optional[float] = None
    run_dir: str = "???"
    torch_threads: Optional[int] = None


def typed_config(cfg: DictConfig, schema: type[Schema]) -> Schema:
    """The Hydra-composed config as an instance of the dataclass `schema`; unknown keys and
    mistyped values raise a one-line ValueError."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        plain.pop("hydra", None)
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), plain))
    except OmegaConfBaseException as err:
        raise ValueError(f"bad config: {str(err).splitlines()[0]} (at {getattr(err, 'full_key', '?')})") from None


def build_objective(spec: ObjectiveConfig, tokenizer, splits=("search", "test")):
    """The objective an `objective` config group describes, its data prepared once."""
    import objectives

    return objectives.build(
        spec.name, tokenizer=tokenizer, splits={name: getattr(spec, name) for name in splits},
        prompt_template=spec.prompt_template, max_new_tokens=spec.max_new_tokens, stop_strings=spec.stop_strings,
        batch_size=spec.batch_size, language_detector=spec.language_detector, primary_metric=spec.fitness,
        allow_overlap=spec.allow_overlap)
