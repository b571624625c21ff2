"""The schema of `conf/genome/config.yaml`: unknown keys, wrong types and bad settings fail in one
line before any model loads or any study exists."""
from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from evo_core import StudyConfig, typed_config

from ._evolution import Settings

MODES = ("genome", "experts", "mixing")


@dataclass
class LoraPoolConfig:
    base: str = "???"                                       # the base model every expert adapts
    experts: dict[str, str] = field(default_factory=dict)  # name -> PEFT LoRA adapter folder
    dtype: str = "float32"
    device: str = "cpu"


@dataclass
class GenomeSettings:
    population: int = 10                 # N
    iterations: int = 10                 # K generations after the initial population
    crossover_rate: float = 0.3          # c_r
    individual_mutation_rate: float = 0.3  # im_r
    gene_mutation_rate: float = 0.2      # gm_r
    sigma: float = 0.001                 # mutation noise
    alpha: float = 0.5                   # selection keeps the top alpha N
    phi: list[float] = field(default_factory=lambda: [0.95, 0.2, 0.2, 0.1])  # experience, global best, current best, worst
    step: float = 0.95                   # lambda: w <- w + lambda e
    experience_scale: float = 0.001      # initial experience ~ N(0, scale^2)
    ensemble_k: int = 3                  # GENOME+ ensemble: the top k answer together
    crossover: bool = True               # the operator switches (the ablation turns one off)
    mutation: bool = True
    selection: bool = True
    succession: bool = True              # GENOME+ (false with ensemble false: GENOME)
    ensemble: bool = True                # GENOME+


@dataclass
class GenomeConfig(StudyConfig):
    lora: LoraPoolConfig = field(default_factory=LoraPoolConfig)
    genome: GenomeSettings = field(default_factory=GenomeSettings)
    # genome: GENOME(+); experts: each expert and their uniform average scored, the best kept;
    # mixing: LoraHub-style, per-expert mixing weights searched by the lifecycle's sampler (cmaes)
    mode: str = "genome"
    mixing_bound: float = 1.5            # mixing: each expert's weight in [-bound, bound] (LoraHub's)
    table_baselines: bool = True         # the test table's base and expert rows (the bench scores them once)

    def settings(self) -> Settings:
        g = self.genome
        return Settings(population=g.population, iterations=g.iterations, crossover_rate=g.crossover_rate,
                        individual_mutation_rate=g.individual_mutation_rate, gene_mutation_rate=g.gene_mutation_rate,
                        sigma=g.sigma, alpha=g.alpha, phi=tuple(g.phi), step=g.step,
                        experience_scale=g.experience_scale, crossover=g.crossover, mutation=g.mutation,
                        selection=g.selection, succession=g.succession)

    def check(self) -> None:
        super().check()
        g = self.genome
        rates = {"genome.crossover_rate": g.crossover_rate, "genome.individual_mutation_rate": g.individual_mutation_rate,
                 "genome.gene_mutation_rate": g.gene_mutation_rate, "genome.alpha": g.alpha}
        checks = [(0.0 <= value <= 1.0, f"{key} must be in [0, 1]; got {value}") for key, value in rates.items()]
        checks += [
            (self.mode in MODES, f"mode must be one of {', '.join(MODES)}; got {self.mode!r}"),
            (bool(self.lora.experts), "lora.experts is empty: an empty population; name at least one LoRA adapter "
                                      "folder (lora.experts.NAME=FOLDER)"),
            (g.population >= 1, f"genome.population must be >= 1; got {g.population}"),
            (g.iterations >= 0, f"genome.iterations must be >= 0; got {g.iterations}"),
            (g.sigma >= 0, f"genome.sigma must be >= 0; got {g.sigma}"),
            (g.experience_scale >= 0, f"genome.experience_scale must be >= 0; got {g.experience_scale}"),
            (len(g.phi) == 4 and all(p >= 0 for p in g.phi) and sum(g.phi) > 0,
             f"genome.phi must be 4 non-negative weights with a positive sum; got {list(g.phi)}"),
            (g.ensemble_k >= 1, f"genome.ensemble_k must be >= 1; got {g.ensemble_k}"),
            (self.mode != "genome" or not g.ensemble or g.ensemble_k <= g.population,
             f"genome.ensemble_k ({g.ensemble_k}) must be <= genome.population ({g.population}): the top k of N"),
            (self.mixing_bound > 0, f"mixing_bound must be > 0; got {self.mixing_bound}"),
            (not self.helper, "helper=true: evo_genome runs one worker (each generation depends on the last)"),
            (self.mode == "mixing" or self.sampler.kind == "random",
             f"sampler.kind must stay random for mode={self.mode} (the operators draw from (seed, generation)); "
             f"got {self.sampler.kind!r}"),
            (self.evaluation.kind == "full" or self.mode == "mixing",
             f"evaluation.kind=racing races CMA-ES generations: only mode=mixing; got mode={self.mode}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def validate(cfg: DictConfig) -> GenomeConfig:
    return typed_config(cfg, GenomeConfig)
