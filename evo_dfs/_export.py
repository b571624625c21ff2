"""Export a layer path as a self-contained HF model directory.

    export_layer_path(model, "out/best_path", tokenizer=tok)
    # anywhere with torch + transformers (>= 5), no evomerge needed:
    AutoModelForCausalLM.from_pretrained("out/best_path", trust_remote_code=True)

Writes: config.json (model A's config + path_layers/path_scales per hop + auto_map), the weights of each
visited layer ONCE plus model A's embeddings / final norm / lm_head, generation_config.json, the
tokenizer, and modeling_layer_path.py -- a verbatim copy of the very module the search runs.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from evo_dfs import modeling_layer_path
from evo_dfs.modeling_layer_path import LayerPathForCausalLM

_MODULE = Path(modeling_layer_path.__file__).stem
AUTO_MAP = {
    "AutoConfig": f"{_MODULE}.LayerPathConfig",
    "AutoModelForCausalLM": f"{_MODULE}.LayerPathForCausalLM",
}


def export_layer_path(model: LayerPathForCausalLM, out_dir, *, tokenizer=None, overwrite: bool = False) -> Path:
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"export directory {out} is not empty (pass overwrite=True)")
    compact = model.compact()
    compact.config.auto_map = dict(AUTO_MAP)
    compact.save_pretrained(out)
    shutil.copyfile(modeling_layer_path.__file__, out / f"{_MODULE}.py")
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
