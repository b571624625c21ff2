"""The schema of `conf/breed/config.yaml`: unknown keys and wrong types fail before any work."""
from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from evo_core import StudyConfig, typed_config
from evo_ps import PoolConfig

from ._offers import has_lock

SELECTIONS = ("proportional", "tournament")
CROSSOVERS = ("slerp",)


@dataclass
class ArchiveConfig:
    pop_size: int = 8              # archive size
    alpha: float = 1.0             # competition for resources: item j is worth 1 / (sum_k s_kj) ** alpha
    attraction: bool = True        # parent 2 by attraction to parent 1 (false: like parent 1)
    attraction_weight: float = 1.0  # parent 2 ~ w attraction + (1 - w) fitness (gen781: 0.7)
    selection: str = "proportional"  # parent 1: proportional to fitness | tournament
    tournament_size: int = 3
    init_merges: int = 0           # uniform task-arithmetic merges (random weight per source) added to the start
    resources: list[str] = field(default_factory=list)  # metrics whose items are competed for ([]: the fitness)


@dataclass
class CrossoverConfig:
    method: str = "slerp"          # split-point SLERP over the ordered parameter list
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
            (a.alpha >= 0, f"archive.alpha must be >= 0; got {a.alpha}"),
            (0 <= a.attraction_weight <= 1, f"archive.attraction_weight must be in [0, 1]; got {a.attraction_weight}"),
            (a.selection in SELECTIONS, f"archive.selection must be one of {', '.join(SELECTIONS)}; got {a.selection!r}"),
            (a.tournament_size >= 1, f"archive.tournament_size must be >= 1; got {a.tournament_size}"),
            (a.init_merges >= 0, f"archive.init_merges must be >= 0; got {a.init_merges}"),
            (self.crossover.method in CROSSOVERS,
             f"crossover.method must be one of {', '.join(CROSSOVERS)}; got {self.crossover.method!r}"),
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
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def validate(cfg: DictConfig) -> BreedConfig:
    return typed_config(cfg, BreedConfig)
