"""Vision-language models (LLaVA-style: `config.vision_config` + `config.text_config`, the LLM under
`model.language_model`): which models are VLMs, and their LLM under causal-LM names
(`model.language_model.X` <-> `model.X`, `lm_head.weight` stays), in a loaded model and in a
checkpoint's safetensors names. Only a VLM's LLM is merged; its vision tower and projector stay.

A VLM's vocabulary may extend the base's (LLaVA adds `<image>`: llava-v1.6-mistral has 32064 rows,
Mistral 32000): `leading_rows` views such a tensor as the base's; the extra rows keep their values.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import AutoConfig

from ._paths import looks_like_hub_id


def is_vision_language(config: object) -> bool:
    """A LLaVA-style VLM config: a vision tower's config and its language model's config."""
    return hasattr(config, "vision_config") and hasattr(config, "text_config")


def text_config(config: object) -> object:
    """The language model's config: a VLM's text_config, else the config itself."""
    return config.text_config if is_vision_language(config) else config


def vision_language_sources(paths: Mapping[str, str | Path]) -> list[str]:
    """The names of the models in `paths` that are vision-language models (by their config.json;
    models not available locally count as not: loading them reports them)."""
    found = []
    for name, path in paths.items():
        config = Path(path).expanduser() / "config.json"
        if config.is_file() and {"vision_config", "text_config"} <= json.loads(config.read_text()).keys():
            found.append(name)
        elif not config.is_file() and looks_like_hub_id(path):
            with contextlib.suppress(Exception):  # offline, gated: the loader's own check says so later
                if is_vision_language(AutoConfig.from_pretrained(str(path))):
                    found.append(name)
    return found


def language_model_params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The causal-LM parameters of `model` under causal-LM names, in `named_parameters` order: a
    VLM's `model.language_model.X` is `model.X`, its `lm_head.weight` stays (unless tied)."""
    if not is_vision_language(getattr(model, "config", None)):
        return dict(model.named_parameters())
    language_model = model.model.language_model
    params = {f"model.{key}": p for key, p in language_model.named_parameters()}
    head = model.get_output_embeddings().weight
    if head is not language_model.get_input_embeddings().weight:
        params["lm_head.weight"] = head
    return params


_VLM_CHECKPOINT_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."),
                            ("language_model.lm_head.", "lm_head."), ("lm_head.", "lm_head."))


def language_model_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """A VLM checkpoint's LLM tensors under causal-LM names (both LLaVA layouts: transformers 5's
    `model.language_model.*` and the older `language_model.model.*`); vision tensors left out."""
    renamed = {}
    for key, shape in shapes.items():
        for old, new in _VLM_CHECKPOINT_PREFIXES:
            if key.startswith(old):
                renamed[new + key.removeprefix(old)] = shape
                break
    return renamed


def leading_rows(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`tensor` cut down to `like`'s rows (a VLM's vocabulary tensor viewed as the base's)."""
    return tensor[:like.shape[0]] if tensor.dim() and tensor.shape != like.shape else tensor
