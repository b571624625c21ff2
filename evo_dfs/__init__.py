"""Data-flow-space (DFS) evolutionary merging: `python -m evo_dfs`."""
