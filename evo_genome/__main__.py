"""GENOME(+), end to end: a population of LoRA experts evolved without gradients.

    python -m evo_genome                              # GENOME+ on the LoRA zoo (the embedded default)
    python -m evo_genome +experiment=genome           # GENOME: no succession, no ensemble
    python -m evo_genome genome.selection=false       # an ablation: one operator off
    python -m evo_genome mode=mixing sampler.kind=cmaes   # LoraHub-style mixing weights by CMA-ES
    python -m evo_genome seed=1                       # any override; same run_dir = resume

The lifecycle (evo_core/_lifecycle.py) runs the search that evo_genome/_search.py defines; then
the test table (base, every expert, the ensemble, the best individual), the best individual as a
PEFT adapter folder and the ensemble as a manifest (`python -m evo_genome.answer`).
"""
from pathlib import Path

from evo_core import cli_main
from evo_genome._config import validate
from evo_genome._search import GenomeSearch

if __name__ == "__main__":
    cli_main(conf_dir=Path(__file__).resolve().parents[1] / "conf" / "genome", validate=validate, search=GenomeSearch)
