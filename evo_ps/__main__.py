"""Parameter-space evolutionary merging, end to end.

    python -m evo_ps                              # the embedded default (zoo, toy_ja_math)
    python -m evo_ps +experiment=ja_math          # the paper's 7B setup (GPU)
    python -m evo_ps space=uniform seed=1         # any override; same run_dir = resume
    python -m evo_ps helper=true                  # one more worker for a running study (any number)

The lifecycle (evo_core/_lifecycle.py) runs the search that evo_ps/_search.py defines: per trial a
merge in memory scored on the search split; then the test table (base, every source, the best
merge) and the best merge saved (HF dir + mergekit YAML + model card), all logged to MLflow.
Several workers: the same command with `helper=true` joins the study that a normal run owns.
"""
from pathlib import Path

from evo_core import cli_main
from evo_ps._config import validate
from evo_ps._search import PSSearch

if __name__ == "__main__":
    cli_main(conf_dir=Path(__file__).resolve().parents[1] / "conf", validate=validate, search=PSSearch)
