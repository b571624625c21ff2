"""Config schema parts both searches share (the `objective`, `sampler` and `tracking` groups of
conf/) and the typed merge that makes configs strict."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Optional, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

Schema = TypeVar("Schema")


@dataclass
class ObjectiveConfig:
    """The `objective` group: which registered objective, its fitness metric, its data, and its own
    options (a generative objective's prompt template and generation settings among them: their
    defaults are in conf/objective/*.yaml, checked by the objective's constructor)."""

    name: str = "mgsm_ja"
    fitness: str = "acc_ja"
    search: Any = field(default_factory=dict)  # a split spec (dict) or a local file path (str)
    test: Any = field(default_factory=dict)  # one split spec, or named test sets {name: spec} (table_splits)
    options: dict[str, Any] = field(default_factory=dict)  # the objective's own, checked by name (build_objective)


OBJECTIVE_KEYS = tuple(f.name for f in fields(ObjectiveConfig))


def objective_key_error(key: str) -> str | None:
    """The one-line message for `objective.<key>` when it is not a key of the group (an old
    generation key such as max_new_tokens, now an option), else None."""
    if key in OBJECTIVE_KEYS:
        return None
    return (f"objective.{key} is not a key of the objective group ({', '.join(OBJECTIVE_KEYS)}): an objective's own "
            f"settings, generation included, are objective.options.{key}")


def check_overrides(overrides: Sequence[str]) -> None:
    """Command-line overrides checked before Hydra composes them: `objective.<key>=...` of a key the
    group does not have (e.g. the generation keys that moved into options) fails in one line
    naming the new place, not in Hydra's several lines about struct mode."""
    for override in overrides:
        match = re.match(r"[+~]*objective\.([^.=~@]+)[.=]?", override)
        message = match and objective_key_error(match.group(1))
        if message:
            raise ValueError(message)


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
    uri: Optional[str] = None  # an MLflow tracking server (http://host:port); null: the local store in mlruns_dir
    experiment: str = "evo_ps"
    # how long a worker tries again a tracking server (uri) that went away mid-run, then stops in
    # one line, nothing lost (evo_core/_probes.py, docs/scale-out.md)
    server_wait_seconds: float = 60.0


@dataclass
class EvaluationConfig:
    """How many search items a trial is scored on (evo_core/_racing.py). full: every item;
    racing: a CMA-ES generation races over blocks of items, and a candidate stops once it is
    surely in or surely out of the mu selected (the leader always runs every item)."""

    kind: str = "full"  # full | racing | multi_fidelity (evo_core/_fidelity.py)
    first_block: int = 30  # items every candidate of a generation is scored on
    block: int = 30  # items added per round for the candidates still racing
    confidence: float = 0.9  # two-sided level of the intervals of paired differences the decisions use
    tolerance: float = 0.05  # a mean difference this small does not keep a candidate racing
    # multi_fidelity: a cheap fidelity screens a generation, the best `promote` are evaluated in full
    cheap: str = "subset"  # likelihood (of the reference answers, no generation) | subset (generated)
    cheap_items: int = 20  # search items the cheap fidelity scores (the same for a whole generation)
    cheap_subset: str = "first"  # which: first | informative (those recent trials scored differently)
    promote: int = 1  # candidates per generation evaluated in full (at least one)
    min_correlation: float = 0.0  # below this cheap-vs-full Spearman, the rest of the study is full evaluation
    min_pairs: int = 8  # trials with both fidelities before the correlation is trusted either way

    @property
    def z(self) -> float:
        """The normal quantile of `confidence` (two-sided)."""
        from statistics import NormalDist

        return NormalDist().inv_cdf(0.5 + self.confidence / 2)


@dataclass
class CacheConfig:
    """What a study keeps for the next one (evo_core/_row_cache.py): the test-table rows of unchanged
    models (base, sources), reused across studies and seeds."""

    test_rows: bool = True  # false: score every row every time, and leave the cache alone
    dir: Optional[str] = None  # null: $EVO_CACHE_DIR, else $XDG_CACHE_HOME/evomerge (~/.cache/evomerge)


@dataclass
class StudyConfig:
    """What every search's top-level config has besides its own groups."""

    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    imports: list[str] = field(default_factory=list)  # modules that register objectives, methods, sources
    study_name: str = "???"
    seed: int = 0
    n_trials: int = 100
    timeout_minutes: Optional[float] = None
    run_dir: str = "???"
    torch_threads: Optional[int] = None
    helper: bool = False  # true: one more worker for the study a normal run of the same command owns
    helper_wait_minutes: float = 10.0  # how long a helper waits for that run to open the study

    @property
    def fitness(self) -> list[str]:
        """The study's objectives in order (a multi-objective search adds to the objective's fitness)."""
        return [self.objective.fitness]

    @property
    def directions(self) -> list[str]:
        return ["maximize"] * len(self.fitness)

    def check(self) -> None:
        """What every search checks before anything loads; a one-line ValueError."""
        checks = [
            (self.n_trials >= 1, f"n_trials must be >= 1; got {self.n_trials}"),
            (self.timeout_minutes is None or self.timeout_minutes > 0,
             f"timeout_minutes must be > 0 or null; got {self.timeout_minutes}"),
            (self.torch_threads is None or self.torch_threads >= 1,
             f"torch_threads must be >= 1 or null; got {self.torch_threads}"),
            (self.helper_wait_minutes > 0, f"helper_wait_minutes must be > 0; got {self.helper_wait_minutes}"),
            (self.tracking.server_wait_seconds > 0,
             f"tracking.server_wait_seconds must be > 0; got {self.tracking.server_wait_seconds}"),
            (self.sampler.sigma0 is None or self.sampler.sigma0 > 0,
             f"sampler.sigma0 must be > 0; got {self.sampler.sigma0}"),
            (self.sampler.popsize is None or self.sampler.popsize >= 2,
             f"sampler.popsize must be >= 2; got {self.sampler.popsize}"),
            # CMA-ES recombines the best half of a generation: with 2-3 candidates that is one, its
            # rank-mu update has no weight (cmaes divides by that zero, in warnings) and only the
            # best candidate steers it: no search the paper's settings describe
            (self.sampler.kind != "cmaes" or self.sampler.popsize is None or self.sampler.popsize >= 4,
             f"sampler.popsize must be >= 4 with sampler.kind=cmaes (it recombines the best half: with "
             f"{self.sampler.popsize} that is one candidate, and cmaes divides by zero in its weights); got "
             f"{self.sampler.popsize}; null takes 4 + 3 ln(n) for n searched values"),
        ]
        ev = self.evaluation
        checks += [
            (ev.kind in ("full", "racing", "multi_fidelity"),
             f"evaluation.kind must be full, racing or multi_fidelity; got {ev.kind!r}"),
            (ev.cheap in ("likelihood", "subset"), f"evaluation.cheap must be likelihood or subset; got {ev.cheap!r}"),
            (ev.cheap_subset in ("informative", "first"),
             f"evaluation.cheap_subset must be informative or first; got {ev.cheap_subset!r}"),
            (ev.cheap_items >= 1 and ev.promote >= 1 and ev.min_pairs >= 2,
             f"evaluation.cheap_items and evaluation.promote must be >= 1, evaluation.min_pairs >= 2; got "
             f"{ev.cheap_items}, {ev.promote}, {ev.min_pairs}"),
            (-1 <= ev.min_correlation <= 1, f"evaluation.min_correlation must be in [-1, 1]; got {ev.min_correlation}"),
            (ev.first_block >= 2 and ev.block >= 1,  # a spread needs two items
             f"evaluation.first_block must be >= 2 and evaluation.block >= 1; got {ev.first_block}, {ev.block}"),
            (0 <= ev.tolerance < 1, f"evaluation.tolerance must be in [0, 1); got {ev.tolerance}"),
            (0 < ev.confidence < 1, f"evaluation.confidence must be in (0, 1); got {ev.confidence}"),
            (ev.kind == "full" or self.sampler.kind == "cmaes",
             f"evaluation.kind={ev.kind} scores whole CMA-ES generations; sampler.kind is {self.sampler.kind!r} (use "
             f"cmaes, or evaluation.kind=full)"),
            # a generation is scored inside one process: a second worker would ask its own
            (ev.kind == "full" or not self.helper,
             f"evaluation.kind={ev.kind} runs one worker (a generation is scored in one process); drop helper=true "
             "or use evaluation.kind=full"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def typed_config(cfg: DictConfig, schema: type[Schema]) -> Schema:
    """The Hydra-composed config as an instance of the dataclass `schema`; unknown keys and
    mistyped values raise a one-line ValueError, and so does `schema.check()`."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        plain.pop("hydra", None)
        for key in plain.get("objective") or {}:  # a config file's old keys: say where they went
            message = objective_key_error(key)
            if message:
                raise ValueError(message)
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), plain))
    except OmegaConfBaseException as err:
        raise ValueError(f"bad config: {str(err).splitlines()[0]} (at {getattr(err, 'full_key', '?')})") from None
    typed.check()
    return typed
