"""What an export publishes names its models, never a path of the machine it ran on.

    published_name("augmxnt/shisa-gamma-7b-v1")                    # a hub id: "augmxnt/shisa-gamma-7b-v1"
    published_name(".../hub/models--augmxnt--shisa-gamma-7b-v1/snapshots/<sha>")  # the HF cache: the same id
    published_name("/data/models/shisa-gamma-7b-v1")               # a local folder: "shisa-gamma-7b-v1"
    published_name("/data/base+/data/lora/add_en")                  # a LoRA adapter source: "base+add_en"
    name_models_in_configs(export_dir)   # config.json & co.: a `_name_or_path` holding a path -> its name

Model cards (`base_model:` and the model tables), the mergekit YAML beside a model and the saved
configs use these names. A source's own config may carry its builder's path (a VLM's
`text_config._name_or_path`), which save_pretrained copies: name_models_in_configs rewrites it.
The study's MLflow params and signature keep the real paths: they are the user's own record of
what ran, not something published.
"""
from __future__ import annotations

import json
from pathlib import Path

from ._paths import looks_like_hub_id, split_adapter_ref

_CACHE_PREFIX = "models--"  # huggingface_hub's cache: hub/models--{owner}--{name}/snapshots/{revision}/


def published_name(ref: str | Path) -> str:
    """How an export names the model at `ref`: its hub id when it is one (or a snapshot in the HF
    cache), else its folder's name; `BASE+ADAPTER` (a LoRA adapter source) names both so."""
    text = str(ref)
    adapter = split_adapter_ref(text)
    if adapter is not None:  # a LoRA adapter source: mergekit's BASE+ADAPTER, each part named
        return "+".join(published_name(part) for part in adapter)
    path = Path(text).expanduser()
    if not path.exists() and looks_like_hub_id(text) and not text.startswith("."):
        return text
    parts = path.parts
    for i, part in enumerate(parts[:-2]):
        if part.startswith(_CACHE_PREFIX) and parts[i + 1] == "snapshots":
            return part.removeprefix(_CACHE_PREFIX).replace("--", "/")
    return path.name or text


def name_models_in_configs(directory: str | Path) -> None:
    """Rewrite, in the JSON configs of an exported model directory, every `_name_or_path` /
    `name_or_path` value (at any depth) to its published name; files that need nothing are left
    as they are."""
    for file in Path(directory).glob("*.json"):
        if file.name == "tokenizer.json":  # the vocabulary: no model names, and large
            continue
        data = json.loads(file.read_text(encoding="utf-8"))
        if _rename(data):
            file.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _rename(node: object) -> bool:
    """Rename in place; True if anything changed."""
    changed = False
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("name_or_path") and isinstance(value, str) and value:
                name = published_name(value)
                changed |= name != value
                node[key] = name
            else:
                changed |= _rename(value)
    elif isinstance(node, list):
        for item in node:
            changed |= _rename(item)
    return changed
