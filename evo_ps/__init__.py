"""Parameter-space (PS) evolutionary merging: `python -m evo_ps`.

    pool = load_pool(base=..., sources={...})                       # evo_core
    method = merge_method("dare_ties")                              # MERGE_METHODS: all of them
    space = build_space(method=method, sources=pool.source_names, tensor_names=pool.param_names,
                        num_layers=pool.num_layers, granularity=1)
    merger = InMemoryMerger(pool=pool, method=method)
    merger.apply(space.tensor_params(values), seed=seed)            # per trial; pool.model is the merge
    mergekit_yaml(method=method, tensor_params=..., base=..., sources=...)   # export
    save_merged(pool.model, pool.tokenizer, out_dir, card={...})
    run_study(cfg, PSSearch(validate(cfg)), resolved=yaml)       # the whole search (python -m evo_ps)

PoolConfig (base + sources, dtype, device) and slerp_coefficients / slerp_cosine are shared with
evo_breed, which breeds on the same pool and crosses over with the same SLERP.
"""
from __future__ import annotations

from ._config import PoolConfig, PSConfig, validate
from ._export import mergekit_yaml, model_card, save_merged
from ._merge import InMemoryMerger, slerp_coefficients, slerp_cosine
from ._methods import MERGE_METHODS, MergeMethod, Param, merge_method
from ._search import PSSearch
from ._space import SearchSpace, Placement, build_space, tensor_group

__all__ = [
    "InMemoryMerger", "MERGE_METHODS", "MergeMethod", "Param", "PoolConfig", "PSConfig", "PSSearch", "SearchSpace",
    "Placement", "build_space", "merge_method", "mergekit_yaml", "model_card", "save_merged", "slerp_coefficients",
    "slerp_cosine", "tensor_group", "validate",
]
