"""Export a parameter-space merge: a mergekit YAML that reproduces it, and an HF model directory.

    text = mergekit_yaml(method=merger.method, tensor_params=space.tensor_params(best_values),
                         base=pool.paths["base"], sources={s: pool.paths[s] for s in pool.source_names},
                         dtype="bfloat16")            # `mergekit-yaml merge.yml out/` rebuilds the merge
    merger.apply(space.tensor_params(best_values), seed=best_seed)
    save_merged(pool.model, pool.tokenizer, "out/best", card={
        "method": "dare_ties", "base": pool.paths["base"], "sources": {...},
        "parameters": best_values, "scores": {"test": {"acc_ja": 0.41}}, "mergekit_yaml": text})

Per-tensor values become mergekit conditional parameters ({filter, value} lists, first match wins,
filter = substring of the tensor name), compressed along the dotted name: a whole layer
(`model.layers.3.`) or module (`model.layers.3.mlp.`) with one value gets one entry; a value shared
by every tensor is written as a plain number. Random methods (dare_*, della*) draw their masks
from mergekit's own generator, so the YAML reproduces their distribution, not the same masks: the
model card says so, and how the scored model itself is rebuilt (random_drops_note).

What save_merged publishes names models, never this machine's paths (evo_core/_publish.py): the
card names the base and sources by hub id or folder name, the saved configs too, and the YAML
beside the model names them so, under a first line saying to point them at local copies
(`published_yaml`); the runnable YAML with the local paths is for the caller to keep elsewhere.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from evo_core import atomic_dir, name_models_in_configs, published_name

from ._methods import MergeMethod

CARD_KEYS = ("title", "method", "base", "sources", "parameters", "scores", "mergekit_yaml", "notes")


def mergekit_yaml(*, method: MergeMethod, tensor_params: Mapping[str, Mapping[str, Any]], base: str,
                  sources: Mapping[str, str], dtype: str = "float32") -> str:
    """A mergekit 0.1.5 config (YAML text) computing the same merge as `InMemoryMerger.apply`."""
    if method.exact_sources is not None and len(sources) != method.exact_sources:
        raise ValueError(f"{method.name} merges exactly {method.exact_sources} source models; got {len(sources)}")
    names = list(tensor_params)
    config: dict[str, Any] = {"merge_method": method.name}
    if method.mergekit_base == "base":
        config["base_model"] = base
    elif method.mergekit_base == "first_source":  # slerp's t = 0, nearswap's a: the first source, as in the merger
        config["base_model"] = next(iter(sources.values()))
    config["models"] = [
        {"model": path, **({"parameters": {key: _setting({n: tensor_params[n][key][source] for n in names})
                                           for key in method.per_source}} if method.per_source else {})}
        for source, path in sources.items()]
    parameters = {**method.options, **{key: _setting({n: tensor_params[n][key] for n in names})
                                       for key in method.shared}}
    if parameters:
        config["parameters"] = parameters
    config["dtype"] = dtype
    return yaml.safe_dump(config, sort_keys=False)


PUBLISHED_YAML_NOTE = ("# models named by hub id, or by folder name for a local copy: point each at a hub id or a "
                       "local path before running mergekit-yaml\n")


def published_yaml(text: str) -> str:
    """A mergekit YAML as published: every model (base_model, models[].model) by its published_name."""
    config = yaml.safe_load(text)
    if config.get("base_model"):
        config["base_model"] = published_name(config["base_model"])
    for entry in config.get("models") or []:
        entry["model"] = published_name(entry["model"])
    return PUBLISHED_YAML_NOTE + yaml.safe_dump(config, sort_keys=False)


def random_drops_note(seed: int) -> str:
    """What a model card says about a merge with random drops (DARE, DELLA): which model the YAML
    rebuilds, and how to rebuild the scored one exactly."""
    return (f"**The mergekit YAML rebuilds this recipe only in distribution.** The merge drops random "
            f"parameters; `mergekit-yaml` draws new drops, so it builds a different model from the one scored "
            f"and saved here. The exact scored model is the weights in this directory. They can also be rebuilt exactly: the search drew "
            f"trial {seed}'s drops with seed {seed}, each tensor's mask from its own generator seeded by "
            f"(seed, tensor, source). Running the same `python -m evo_ps` command again with the same `run_dir` on "
            f"the same source models (the study is complete, so no trial runs) writes this model again, identical "
            f"to the bit.")


def _setting(values: Mapping[str, float]) -> float | list[dict[str, Any]]:
    """A mergekit parameter setting giving each tensor name its value."""
    if len(set(values.values())) == 1:
        return float(next(iter(values.values())))
    entries = _compress([], sorted(values, key=_natural), values)
    if any(_first_match(entries, name) != value for name, value in values.items()):
        # one entry per tensor, longer names first: a name contains no other tensor's longer name,
        # so each tensor's own entry is its first match
        entries = sorted(values.items(), key=lambda e: -len(e[0]))
    return [{"filter": f, "value": float(v)} for f, v in entries]


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in name.split(".")]


def _compress(prefix: list[str], names: list[str], values: Mapping[str, float]) -> list[tuple[str, float]]:
    distinct = {values[n] for n in names}
    if len(distinct) == 1 and prefix:
        return [(".".join(prefix) + ("" if len(names) == 1 and names[0] == ".".join(prefix) else "."),
                 distinct.pop())]
    children: dict[str, list[str]] = {}
    depth = len(prefix)
    for name in names:
        children.setdefault(name.split(".")[depth], []).append(name)
    out = []
    for part, members in children.items():
        if len(members) == 1 and members[0].count(".") == depth:  # a leaf: the full tensor name
            out.append((members[0], values[members[0]]))
        else:
            out.extend(_compress(prefix + [part], members, values))
    return out


def _first_match(entries: list[tuple[str, float]], name: str) -> float | None:
    return next((value for flt, value in entries if flt in name), None)


def save_merged(model, tokenizer, out_dir: str | Path, *, card: Mapping[str, Any]) -> Path:
    """Write an HF model directory (safetensors, config, tokenizer) with a README.md model card,
    whole or not at all: it is written next to `out_dir` and renamed into place once complete (a
    failure midway leaves no half-written directory, and a previous one as it was).

    card keys: method and sources (name -> path or hub id) required; title, base, parameters
    ({name: value}), scores ({split: {metric: value}} or {metric: value}), mergekit_yaml (also
    written to mergekit_config.yml) and notes optional. What is written names models, not local
    paths: the card's base and sources and the YAML's models by published_name (published_yaml),
    and the saved configs likewise (name_models_in_configs).
    """
    unknown = set(card) - set(CARD_KEYS)
    if unknown:
        raise ValueError(f"unknown model card keys {sorted(unknown)}; known: {', '.join(CARD_KEYS)}")
    for key in ("method", "sources"):
        if key not in card:
            raise ValueError(f"model card needs {key!r}")
    out = Path(out_dir)
    if card.get("mergekit_yaml"):
        card = {**card, "mergekit_yaml": published_yaml(card["mergekit_yaml"])}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        name_models_in_configs(tmp)
        if card.get("mergekit_yaml"):
            (tmp / "mergekit_config.yml").write_text(card["mergekit_yaml"], encoding="utf-8")
        (tmp / "README.md").write_text(model_card(card, name=out.name), encoding="utf-8")
    return out


def model_card(card: Mapping[str, Any], *, name: str) -> str:
    sources = {source: published_name(ref) for source, ref in card["sources"].items()}
    base = card.get("base") and published_name(card["base"])
    # a LoRA adapter source (`base+adapter`) lists both: the hub's base_model metadata takes model ids
    models = list(dict.fromkeys(part for ref in ([base] if base else []) + list(sources.values())
                                for part in ref.split("+")))
    front = yaml.safe_dump({"library_name": "transformers", "tags": ["merge", "evolutionary-model-merge"],
                            "base_model": models}, sort_keys=False)
    lines = [f"---\n{front}---", f"# {card.get('title') or name}", "",
             f"A merge of the models below by **{card['method']}**, with its per-layer merge parameters "
             f"found by evolutionary search (CMA-ES), after Akiba et al., *Evolutionary Optimization of "
             f"Model Merging Recipes* (2025).", "", "## Models", "", "| role | name | model |", "|---|---|---|"]
    if base:
        lines.append(f"| base | | `{base}` |")
    lines += [f"| source | {source} | `{path}` |" for source, path in sources.items()]
    if card.get("scores"):
        lines += ["", "## Scores", "", "| split | metric | value |", "|---|---|---|"]
        for split, metrics in card["scores"].items():
            rows = metrics.items() if isinstance(metrics, Mapping) else [(split, metrics)]
            label = split if isinstance(metrics, Mapping) else ""
            lines += [f"| {label} | {metric} | {_fmt(value)} |" for metric, value in rows]
    if card.get("parameters"):
        lines += ["", "## Merge parameters", "", "| parameter | value |", "|---|---|"]
        lines += [f"| `{key}` | {_fmt(value)} |" for key, value in card["parameters"].items()]
    if card.get("mergekit_yaml"):
        lora = any("+" in ref for ref in sources.values())  # mergekit applies BASE+ADAPTER in a cache folder
        lines += ["", "## Reproduce with mergekit", "",
                  f"`mergekit-yaml mergekit_config.yml OUT_DIR{' --lora-merge-cache CACHE_DIR' if lora else ''}`, once "
                  f"each model in it names a hub id or a local copy (local models are named by their folder"
                  f"{'; `BASE+ADAPTER` is a LoRA adapter applied to its base' if lora else ''}).", "",
                  "```yaml", card["mergekit_yaml"].rstrip(), "```"]
    if card.get("notes"):
        lines += ["", "## Notes", "", str(card["notes"])]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
