"""The schema of `conf/breed/config.yaml`: unknown keys and wrong types fail before any work."""
from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from evo_core import StudyConfig, typed_config
from evo_ps import PoolConfig

from ._offers import has_lock

SELECTIONS = ("proportional", "tournament")
CROSSOVERS = ("slerp", "della", "mixed")


@dataclass
class ArchiveConfig:
    pop_size: int = 8              # archive size
    alpha: float = 1.0             # competition for resources: item j is worth 1 / (sum_k s_kj) ** alpha
    attraction: bool = True        # parent 2 by attraction to parent 1 (false: like parent 1)
    attraction_weight: float = 1.0  # parent 2 ~ w attraction + (1 - w) fitness (gen781: 0.7)
    selection: str = "proportional"  # parent 1: proportional to fitness | tournament
    tournament_size: int = 3
    init_merges: int = 0           # uniform task-arithmetic merges (random weight per source) added to the start
    beat_parents: bool = False     # gen781: a child survives only if its mean resource score beats both parents'
    resources: list[str] = field(default_factory=list)  # metrics whose items are competed for ([]: the fitness)


@dataclass
class DellaRanges:
    """DELLA's parameters, each drawn per child uniformly from [low, high] (mergekit's names)."""
    weight: list[float] = field(default_factory=lambda: [0.3, 1.0])    # per parent
    density: list[float] = field(default_factory=lambda: [0.4, 0.8])   # per parent: share of each task vector kept
    epsilon: list[float] = field(default_factory=lambda: [0.05, 0.15])  # keep-probability spread by magnitude rank
    lambda_: list[float] = field(default_factory=lambda: [0.9, 1.1])   # mergekit's lambda (a Python keyword)


@dataclass
class CrossoverConfig:
    method: str = "slerp"          # slerp (split-point SLERP) | della (the parents' task vectors) | mixed
    della_probability: float = 0.5  # mixed: each child DELLA with this probability, else SLERP
    della: DellaRanges = field(default_factory=DellaRanges)
    mutation_std: float = 0.0      # Gaussian mutation, in units of each tensor's RMS (0: none)


@dataclass
class BreedConfig(StudyConfig):
    pool: PoolConfig = field(default_factory=PoolConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    crossover: CrossoverConfig = field(default_factory=CrossoverConfig)

    @property
    def n_initial(self) -> int:
        """The start: base, every source, the uniform merges; each is one evaluation."""
        return 1 + len(self.pool.sources) + self.archive.init_merges

    def check(self) -> None:
        super().check()
        a = self.archive
        checks = [
            (len(self.pool.sources) >= 2, f"pool.sources needs at least two source models; got {sorted(self.pool.sources)}"),
            (a.pop_size >= 2, f"archive.pop_size must be >= 2; got {a.pop_size}"),
            (a.pop_size >= self.n_initial,
             f"archive.pop_size ({a.pop_size}) is smaller than its {self.n_initial} starting models "
             f"(base, {len(self.pool.sources)} sources, {a.init_merges} uniform merges)"),
            (a.alpha >= 0, f"archive.alpha must be >= 0; got {a.alpha}"),
            (0 <= a.attraction_weight <= 1, f"archive.attraction_weight must be in [0, 1]; got {a.attraction_weight}"),
            (a.selection in SELECTIONS, f"archive.selection must be one of {', '.join(SELECTIONS)}; got {a.selection!r}"),
            (a.tournament_size >= 1, f"archive.tournament_size must be >= 1; got {a.tournament_size}"),
            (a.init_merges >= 0, f"archive.init_merges must be >= 0; got {a.init_merges}"),
            (self.crossover.method in CROSSOVERS,
             f"crossover.method must be one of {', '.join(CROSSOVERS)}; got {self.crossover.method!r}"),
            (0 <= self.crossover.della_probability <= 1,
             f"crossover.della_probability must be in [0, 1]; got {self.crossover.della_probability}"),
            (self.crossover.mutation_std >= 0, f"crossover.mutation_std must be >= 0; got {self.crossover.mutation_std}"),
            (self.n_trials > self.n_initial,
             f"n_trials ({self.n_trials}) must exceed the {self.n_initial} evaluations of the starting population "
             f"(base, {len(self.pool.sources)} sources, {a.init_merges} uniform merges)"),
            (not self.helper or not self.tracking.storage or has_lock(self.tracking.storage),
             "helper=true: evo_breed serialises its workers' offers with a lock on a SQLite or PostgreSQL "
             "tracking.storage only"),
            (self.sampler.kind == "random", f"sampler.kind must stay random for evo_breed (it draws split and w "
                                            f"itself, per trial); got {self.sampler.kind!r}"),
        ]
        for ok, message in checks + _della_range_checks(self.crossover.della):
            if not ok:
                raise ValueError(message)


def _della_range_checks(d: DellaRanges) -> list[tuple[bool, str]]:
    """Each range a [low, high] pair, every draw valid for mergekit's della (density +- epsilon
    inside (0, 1), epsilon in (0, 0.5))."""
    ranges = {"weight": d.weight, "density": d.density, "epsilon": d.epsilon, "lambda_": d.lambda_}
    for name, r in ranges.items():
        if len(r) != 2 or r[0] > r[1]:
            return [(False, f"crossover.della.{name} must be [low, high] with low <= high; got {list(r)}")]
    (_, eps_high), (d_low, d_high) = d.epsilon, d.density
    return [
        (d.weight[0] >= 0 and d.weight[1] > 0, f"crossover.della.weight must be >= 0 and not all 0; got {list(d.weight)}"),
        (0 < d.epsilon[0] and eps_high < 0.5, f"crossover.della.epsilon must lie in (0, 0.5); got {list(d.epsilon)}"),
        (d_low - eps_high > 0 and d_high + eps_high < 1,
         f"crossover.della.density +- epsilon must stay inside (0, 1); got density {list(d.density)}, "
         f"epsilon up to {eps_high}"),
        (d.lambda_[0] > 0, f"crossover.della.lambda_ must be > 0; got {list(d.lambda_)}"),
    ]


def validate(cfg: DictConfig) -> BreedConfig:
    return typed_config(cfg, BreedConfig)
