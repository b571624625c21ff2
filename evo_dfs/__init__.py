"""Data-flow-space (DFS) evolutionary merging: `python -m evo_dfs`.

    layout = SlotLayout.of(models, repeats=3)               # T = M * r slots
    space = DFSSpace(layout=layout, scales="matrix")        # or scales="wnet", hidden=8
    path = space.path(genome)                               # LayerPath(layers, scales)
    model = LayerPathForCausalLM.from_sources(models, path.layers, path.scales)   # once
    model.set_path(path.layers, path.scales)                # per trial, no weight copies
    export_layer_path(model, out_dir, tokenizer=tok)        # self-contained HF dir
    write_model_card(out_dir, title=..., sources=..., origins=..., path=path, scores=...)
    sampler = evo_core.GenomeCMA(space=space, seed=0)       # paper scale: CMA-ES on the packed genome
    plot_path(path.layers, path.scales, layout.layer_owner, "path.png")
    cfg = validate(composed); check_sources(cfg.pool)       # the typed config; every source can be had
    run_study(cfg, DFSSearch(cfg), resolved=yaml)           # the whole search (python -m evo_dfs)
"""
from evo_dfs._config import DFSConfig, validate
from evo_dfs._export import export_layer_path, write_model_card
from evo_dfs._path import (
    SCALE_MODELS,
    LayerPath,
    MatrixScales,
    SlotLayout,
    WNet,
    layer_path,
    make_scale_model,
    select_hops,
)
from evo_dfs._plot import plot_path
from evo_dfs._search import DFSSearch, check_sources
from evo_dfs._space import DFSSpace
from evo_dfs.modeling_layer_path import LayerPathConfig, LayerPathForCausalLM

__all__ = [
    "SCALE_MODELS", "DFSConfig", "DFSSearch", "DFSSpace", "LayerPath", "LayerPathConfig", "LayerPathForCausalLM",
    "MatrixScales", "SlotLayout", "WNet", "check_sources", "export_layer_path", "layer_path", "make_scale_model",
    "plot_path", "select_hops", "validate", "write_model_card",
]
