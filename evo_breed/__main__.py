"""Population breeding (M2N2), end to end.

    python -m evo_breed                              # the embedded default (zoo, toy_ja_math)
    python -m evo_breed +experiment=ja_math          # the paper's 7B fine-tunes of Mistral (GPU)
    python -m evo_breed archive.alpha=0 archive.attraction=false    # plain GA
    python -m evo_breed seed=1                       # any override; same run_dir = resume

The lifecycle (evo_core/_lifecycle.py) runs the search that evo_breed/_search.py defines: the
starting models scored, then one child per trial bred from the archive and scored; then the test
table (base, every source, the champion) and the champion saved (HF dir + model card with its
lineage), the lineage tree and the archive's coverage logged to MLflow. One worker per study.
"""
from pathlib import Path

from evo_breed._config import validate
from evo_breed._search import BreedSearch
from evo_core import cli_main

if __name__ == "__main__":
    cli_main(conf_dir=Path(__file__).resolve().parents[1] / "conf" / "breed", validate=validate, search=BreedSearch)
