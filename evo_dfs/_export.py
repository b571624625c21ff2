"""Export a layer path as a self-contained HF model directory.

    export_layer_path(model, "out/best_path", tokenizer=tok)
    # anywhere with torch + transformers (>= 5), no evomerge needed:
    AutoModelForCausalLM.from_pretrained("out/best_path", trust_remote_code=True)

Writes: config.json (model A's config + path_layers/path_scales per hop + auto_map), the weights of each
visited layer ONCE plus model A's embeddings / final norm / lm_head, generation_config.json, the
tokenizer, and modeling_layer_path.py -- a verbatim copy of the very module the search runs. The
directory is written next to `out_dir` and renamed into place once complete: never half-written.
Models are named by hub id or folder name, never by a local path (evo_core/_publish.py).
`write_model_card(out_dir, ...)` adds a README.md (sources, the path hop by hop, scores).
"""
from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from evo_core import atomic_dir, atomic_write_text, name_models_in_configs, published_name
from evo_dfs import modeling_layer_path
from evo_dfs._path import LayerPath
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
    with atomic_dir(out) as tmp:
        compact.save_pretrained(tmp)
        shutil.copyfile(modeling_layer_path.__file__, tmp / f"{_MODULE}.py")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        name_models_in_configs(tmp)  # a source config's own path (e.g. a VLM's text_config) is not published
    return out


def write_model_card(out_dir, *, title: str, sources: Mapping[str, str], origins: Sequence[str], path: LayerPath,
                     scores: Mapping[str, Mapping[str, float]]) -> Path:
    """README.md for an exported path: sources (model A first, named by hub id or folder name:
    published_name), the path hop by hop, scores.

    origins: provenance of each global layer index ("ja.layers.3"), as `config.stored_layer_origins`
    of the search-time model; scores: {row: {metric: value}}, e.g. {"test: best_path": {"acc_ja": 0.4}}.
    """
    out = Path(out_dir)
    sources = {name: published_name(ref) for name, ref in sources.items()}
    front = yaml.safe_dump({"library_name": "transformers", "tags": ["merge", "evolutionary-model-merge",
                                                                    "layer-path"],
                            "base_model": list(sources.values())}, sort_keys=False)
    names = list(sources)
    lines = [f"---\n{front}---", f"# {title}", "",
             f"A data-flow-space merge after Akiba et al., *Evolutionary Optimization of Model Merging Recipes* "
             f"(2025): tokens pass through a path of {len(path.layers)} decoder layers taken from the models below, "
             f"found by evolutionary search. Model A (`{names[0]}`) supplies the tokenizer, embeddings, final norm "
             f"and LM head; the hidden state entering each hop is multiplied by that hop's scale.", "",
             "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
             "model = AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)  # modeling_layer_path.py",
             "tokenizer = AutoTokenizer.from_pretrained(DIR, trust_remote_code=True)", "```", "",
             "## Models", "", "| role | name | model |", "|---|---|---|"]
    lines += [f"| {chr(ord('A') + k)} | {name} | `{src}` |" for k, (name, src) in enumerate(sources.items())]
    lines += ["", "## Path", "", f"{len(path.layers)} hops over {len(set(path.layers))} distinct layers.", "",
              "| hop | layer | scale |", "|---|---|---|"]
    lines += [f"| {hop} | {origins[layer]} | {scale:.4f} |" for hop, (layer, scale)
              in enumerate(zip(path.layers, path.scales))]
    if scores:
        metrics = sorted({m for row in scores.values() for m in row})
        lines += ["", "## Scores", "", "| | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        lines += [f"| {row} | " + " | ".join(_fmt(values.get(m)) for m in metrics) + " |"
                  for row, values in scores.items()]
    card = out / "README.md"
    atomic_write_text(card, "\n".join(lines) + "\n")
    return card


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
