"""Model pool: load causal LMs (or vision-language models' LLMs) once, validated before any weight is read.

Parameter-space search (one live model whose weights each trial overwrites):

    from evo_core import load_pool
    pool = load_pool(base="zoo/models/base", sources={"ja": ".../ja", "math": ".../math"},
                     dtype="bfloat16", device="cuda")
    pool.model                                  # live copy of base on `device`; mergers write into it
    pool.base["model.norm.weight"]              # host (CPU) copies of the base weights
    pool.sources["ja"]["model.norm.weight"]     # host copies of every source's weights
    pool.reset()                                # live model := base again

A source may be a vision-language model (_vlm.py): only its LLM is merged, under causal-LM names,
and the live model is then that VLM, so its vision tower and projector stay as they are; the extra
vocabulary rows a VLM may add keep the VLM's values.

    pool = load_pool(base="zoo/models/base", sources={"vlm": "zoo/models/vlm", "ja": "zoo/models/ja"})
    pool.model                                  # the live LlavaForConditionalGeneration
    pool.live_name                              # "vlm": whose vision tower and extra rows it keeps
    pool.use(pool.sources["ja"])                # the live VLM with the Japanese LLM's weights

Data-flow search (several models side by side, nothing merged):

    models = load_models({"ja": ".../ja", "math": ".../math"}, dtype="float32", device="cpu")

A source may be a PEFT LoRA adapter: a folder with adapter_config.json, or mergekit's `base+adapter`;
it is applied to its base once, at load, and is then a source like any other (_adapters.py).

    pool = load_pool(base="zoo/models/base", sources={"add": "zoo/models/lora/add_en",
                                                      "count": "zoo/models/lora/count_ja"})
    pool.paths["add"]                           # ".../zoo/models/base+zoo/models/lora/add_en"

Paths are local model directories; anything that is not an existing directory but looks like a
Hugging Face hub id (`owner/name`) is loaded from the hub (a GPU user's setup). Weights are read
from safetensors only, unless `allow_pickle_weights=True` (then pickled ones too, through
torch.load(weights_only=True) and never otherwise). The checks, each
failing in one line before any weight is loaded, are in _model_checks.py; the content hash a
resumed study compares is in _fingerprint.py.
"""
from __future__ import annotations

import copy
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer, PreTrainedModel

from ._adapters import adapter_sources, check_adapter_sources, merge_adapter, resolve_adapter_sources, same_model
from ._model_checks import (PICKLE_OPT_IN, check_finite, check_model_path, check_same_architecture, check_same_shapes,
                            check_same_tokenizer, check_weights_format, load_config, load_weights_error)
from ._safetensors import header_shapes
from ._vlm import (is_vision_language, language_model_params, language_model_shapes, leading_rows, text_config,
                   vision_language_sources)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# source names become parts of search-parameter names ("L03.<source>.weight"), so no dots
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; known: {', '.join(DTYPES)}")
    return DTYPES[name]


def _param_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(p.shape) for key, p in language_model_params(model).items()}


def load_models(paths: Mapping[str, str | Path], *, dtype: str = "float32", device: str = "cpu",
                same_shapes: bool = True, allow_pickle_weights: bool = False) -> dict[str, PreTrainedModel]:
    """Load each named causal LM (eval mode, no grad) after checking paths, weight formats,
    architectures and tokenizers, and tensor shapes where local safetensors headers tell them;
    shapes are checked again once loaded, and every weight must be finite.

    same_shapes=False skips the shape checks (e.g. data-flow models of different depths).
    allow_pickle_weights=False: safetensors weights only (a hub id is loaded with use_safetensors);
    True: pickled weights too, read by torch.load(weights_only=True) and never otherwise.
    """
    torch_dtype = resolve_dtype(dtype)
    if not paths:
        raise ValueError("no models to load")
    for name in paths:
        if not _NAME.fullmatch(name):
            raise ValueError(f"model name {name!r} must use only letters, digits, '_' and '-'")
    resolved = {name: check_model_path(name, path) for name, path in paths.items()}
    for name, path in resolved.items():
        check_weights_format(name, path, allow_pickle=allow_pickle_weights)
    configs = {name: load_config(name, path) for name, path in resolved.items()}
    check_same_architecture(configs)
    vlms = [name for name, cfg in configs.items() if is_vision_language(cfg)]
    check_same_tokenizer(resolved, may_extend=vlms)
    # a VLM may have more vocabulary rows than the first model (LLaVA's <image>, ...)
    extra_rows = {name: text_config(next(iter(configs.values()))).vocab_size for name in vlms}
    headers = {name: header_shapes(name, path) for name, path in resolved.items()}
    if same_shapes and all(h is not None for h in headers.values()):
        check_same_shapes({name: language_model_shapes(h) if name in vlms else h for name, h in headers.items()},
                          extra_rows=extra_rows)

    models = {}
    for name, path in resolved.items():
        auto = AutoModelForImageTextToText if name in vlms else AutoModelForCausalLM
        try:
            # weights_only=True is transformers' default; said here, as it is all the opt-in allows
            model = auto.from_pretrained(path, dtype=torch_dtype, weights_only=True,
                                         use_safetensors=None if allow_pickle_weights else True)
        except pickle.UnpicklingError as err:
            raise load_weights_error(name, path, err) from None
        except OSError as err:  # a hub id: transformers' own message names the file it lacks
            if "safetensors" not in str(err) or allow_pickle_weights:
                raise
            raise ValueError(f"model {name!r}: {path} has no safetensors weights ({str(err).splitlines()[0]}); "
                             f"download it, convert it to safetensors and point model {name!r} at the local copy "
                             f"(or set {PICKLE_OPT_IN}=true)") from None
        check_finite(name, model)
        models[name] = model.to(device).eval().requires_grad_(False)
    if same_shapes:
        check_same_shapes({name: _param_shapes(model) for name, model in models.items()}, extra_rows=extra_rows)
    return models


@torch.no_grad()
def use_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Overwrite a live model's (language-model) parameters in place with `weights`, keyed by
    causal-LM names (e.g. to score one source model as it is). A VLM's appended vocabulary rows,
    which `weights` may lack, keep their values."""
    for key, param in language_model_params(model).items():
        leading_rows(param, weights[key]).copy_(weights[key])


@dataclass(eq=False)
class ModelPool:
    """A base and its sources, loaded once. `model` is the live model trials write into.

    `base` and `sources` hold host (CPU) copies keyed by causal-LM parameter name (tied weights
    once, as `named_parameters()` lists them); `param_names` is that order. With a VLM among the
    sources, `model` is that VLM (`live_name`) and only its language model is written.
    """

    model: PreTrainedModel
    tokenizer: object
    config: object
    base: dict[str, torch.Tensor]
    sources: dict[str, dict[str, torch.Tensor]]
    paths: dict[str, str]  # "base" and every source name -> where it was loaded from
    base_name: str
    num_layers: int
    dtype: torch.dtype
    device: torch.device
    live_name: str = "base"  # the model `model` was loaded as: the base, or a VLM source

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(self.sources)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.base)

    def live_params(self) -> dict[str, torch.Tensor]:
        """The live model's merged tensors by causal-LM name: views a merge writes into (a VLM's
        vocabulary tensors are viewed down to the base's rows)."""
        live = language_model_params(self.model)
        return {key: leading_rows(live[key], self.base[key]) for key in self.base}

    def use(self, weights: Mapping[str, torch.Tensor]) -> None:
        """The live model with `weights` (the base's, a source's) as its language model."""
        use_weights(self.model, weights)

    def reset(self) -> None:
        """Overwrite the live model with the base weights."""
        self.use(self.base)


def load_pool(*, base: str | Path, sources: Mapping[str, str | Path], dtype: str = "float32",
              device: str = "cpu", base_name: str = "base", tokenizer: object | None = None,
              allow_pickle_weights: bool = False) -> ModelPool:
    """Load base + at least two sources for parameter-space merging; the live model on `device`.
    A source may be a PEFT LoRA adapter folder or `BASE+ADAPTER` (_adapters.py): it is merged into
    a copy of its base once, here, in `dtype`, and is then a source like any other (its path in
    `paths` is `BASE+ADAPTER`).
    `tokenizer`: the base's, if the caller has already loaded it (else it is loaded here);
    allow_pickle_weights: as load_models."""
    if len(sources) < 2:
        raise ValueError(
            f"parameter-space merging needs at least 2 source models; "
            f"got {len(sources)}: {', '.join(sources) or 'none'}")
    if base_name in sources:
        raise ValueError(f"source name {base_name!r} is taken by the base model; rename the source")
    sources = resolve_adapter_sources(sources, base=base)
    check_adapter_sources(sources, base=base)
    adapters = adapter_sources(sources)
    paths = {name: check_model_path(name, path) for name, path in {base_name: base, **sources}.items()
             if name not in adapters}
    # an adapter's base is loaded (and checked) as that source, unless it is the pool's base: then a copy of it
    own_bases = {name: check_model_path(name, ref) for name, (ref, _) in adapters.items()
                 if not same_model(ref, paths[base_name])}
    vlms = vision_language_sources(paths)
    if base_name in vlms:
        raise ValueError(f"the base {paths[base_name]} is a vision-language model; the base is the LLM the "
                         f"sources were fine-tuned from (e.g. Mistral-7B-v0.1 for LLaVA-1.6-Mistral)")
    if len(vlms) > 1:
        raise ValueError(f"sources {', '.join(vlms)} are all vision-language models; a pool keeps one vision "
                         f"tower, so at most one source may be a VLM")
    # load on CPU: the host copies stay there; only the live model moves to `device`
    models = load_models({**paths, **own_bases}, dtype=dtype, device="cpu", allow_pickle_weights=allow_pickle_weights)
    for name, (_, folder) in adapters.items():
        adapted = merge_adapter(name, models[name] if name in own_bases else copy.deepcopy(models[base_name]), folder)
        check_finite(name, adapted)
        models[name] = adapted
        paths[name] = sources[name]
    models = {name: models[name] for name in (base_name, *sources)}  # the sources' order: the search's
    paths = {name: paths[name] for name in (base_name, *sources)}
    live_name = vlms[0] if vlms else base_name
    base_params = language_model_params(models[base_name])
    host = {}
    for name, m in models.items():
        host[name] = {key: leading_rows(p.detach(), base_params[key]) for key, p in language_model_params(m).items()}
    # the live model's own weights are copied: merges overwrite them
    host[live_name] = {key: t.clone() for key, t in host[live_name].items()}
    live = models[live_name]
    live.to(device)
    return ModelPool(
        model=live,
        tokenizer=tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(paths[live_name]),
        config=live.config,
        base=host.pop(base_name),
        sources=host,
        paths=paths,
        base_name=base_name,
        num_layers=text_config(live.config).num_hidden_layers,
        dtype=resolve_dtype(dtype),
        device=torch.device(device),
        live_name=live_name,
    )
