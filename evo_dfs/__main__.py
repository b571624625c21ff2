"""Data-flow-space evolutionary merging, end to end.

    python -m evo_dfs                                  # the embedded default (zoo, toy_ja_math)
    python -m evo_dfs +experiment=toy_hybrid           # PS + DFS, after `python -m evo_ps`
    python -m evo_dfs +experiment=ja_math              # the paper's 7B setup (GPU)
    python -m evo_dfs sampler=nsga2 minimize=[path_length]   # accuracy vs path length
    python -m evo_dfs space.scales=wnet seed=1         # any override; same run_dir = resume

The lifecycle (evo_core/_lifecycle.py) runs the search that evo_dfs/_search.py defines: per trial
a layer path over the live layers of the source models, scored on the search split; then the test
table (every source and the best path) and the best path exported for trust_remote_code loading.
"""
from pathlib import Path

from evo_core import cli_main
from evo_dfs._config import validate
from evo_dfs._search import DFSSearch

if __name__ == "__main__":
    cli_main(conf_dir=Path(__file__).resolve().parents[1] / "conf" / "dfs", validate=validate, search=DFSSearch)
