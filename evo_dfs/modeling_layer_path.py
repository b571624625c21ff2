"""Layer-path causal LM: a decoder that runs tokens through a path of stored decoder layers.

SELF-CONTAINED: imports only torch and transformers (>= 5). The exporter copies this very file next to
the weights, so `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` loads an exported
path on a machine without this project; during the search the same class is assembled from the live
layers of loaded source models (shared, never copied).

Model (Akiba et al. 2025, data-flow space): model A (the first source) supplies the embeddings, the
final norm, the lm_head and the rotary embedding; `config.path_layers[h]` is the stored layer run at
hop h and `config.path_scales[h]` multiplies the hidden state entering that hop (the paper's W_ij for
the hop from layer i into layer j). A stored layer may be visited by several hops.

KV cache: every HOP has its own cache entry. To HF's cache and `generate` machinery this model looks
like a decoder with `config.num_hidden_layers == len(path_layers)` layers (and per-hop `layer_types`),
so `DynamicCache(config=model.config)` -- what `generate` builds -- has one entry per hop. The stored
layers still call `cache.update(k, v, self.layer_idx)` with their own index; each hop gets a
thin view of the cache that redirects that update to the hop's entry, so the shared layers are never
mutated.

    search:  model = LayerPathForCausalLM.from_sources([model_a, model_b], path_layers=[0, 1, 5, 3],
                                                       path_scales=[1.0, 1.0, 0.9, 1.1])
             model.set_path([0, 5, 5, 3], [1.0, 1.2, 0.8, 1.0])   # cheap: no weights touched
    export:  model.compact().save_pretrained(dir)  (see evo_dfs.export_layer_path)
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast

# attention type of a hop -> HF mask builder; the keys are HF's `layer_types` values
# transformers 5.24 renamed the cache argument and output field `past_key_values` -> `cache` (the old
# name is deprecated, to be removed in 5.40). Speak whichever the installed release speaks, so the
# exported model runs on 5.0 and on the newest release alike.
_CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
_MASK_BUILDERS = {
    "full_attention": create_causal_mask,
    "sliding_attention": create_sliding_window_causal_mask,
}
# keys of LayerPathConfig that are not model A's own config
_OWN_KEYS = ("base_model_type", "num_stored_layers", "stored_layer_types", "stored_layer_origins",
             "path_layers", "path_scales")
# keys of model A's config dict that belong to the wrapper, not to the base architecture
_NOT_BASE_KEYS = _OWN_KEYS + ("model_type", "architectures", "auto_map", "transformers_version",
                              "num_hidden_layers", "layer_types")


class LayerPathConfig(PretrainedConfig):
    """Model A's config (flat: all its keys) + the path.

    base_model_type: model_type of the source family (e.g. "qwen3"); num_stored_layers: stored layers;
    stored_layer_types: attention type per stored layer, or None when the family has no `layer_types`
    (e.g. Mistral: sliding iff `sliding_window` is set); stored_layer_origins: provenance strings
    ("src_a.layers.3"); path_layers / path_scales: per hop. num_hidden_layers / layer_types are PER HOP.
    """

    model_type = "layer_path"

    def __init__(self, base_model_type: str = "llama", num_stored_layers: int = 0,
                 stored_layer_types: list[str] | None = None,
                 stored_layer_origins: list[str] | None = None,
                 path_layers: list[int] | None = None, path_scales: list[float] | None = None,
                 use_cache: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.use_cache = use_cache  # transformers 5 drops generation keys unless the config declares them
        self.base_model_type = base_model_type
        self.num_stored_layers = int(num_stored_layers)
        self.stored_layer_types = None if stored_layer_types is None else list(stored_layer_types)
        self.stored_layer_origins = None if stored_layer_origins is None else list(stored_layer_origins)
        self.set_path(path_layers or [], path_scales)

    def set_path(self, path_layers, path_scales=None) -> None:
        layers = [int(i) for i in path_layers]
        scales = [1.0] * len(layers) if path_scales is None else [float(s) for s in path_scales]
        if len(scales) != len(layers):
            raise ValueError(f"path has {len(layers)} hops but {len(scales)} scales")
        bad = [i for i in layers if not 0 <= i < self.num_stored_layers]
        if bad:
            raise ValueError(f"path layers {bad} out of range 0..{self.num_stored_layers - 1}")
        self.path_layers, self.path_scales = layers, scales
        # what HF caches / generate see: one "layer" per hop
        self.num_hidden_layers = len(layers)
        if self.stored_layer_types is not None:
            self.layer_types = [self.stored_layer_types[i] for i in layers]

    def hop_attention_types(self) -> list[str]:
        if self.stored_layer_types is not None:
            return list(self.layer_types)
        kind = "sliding_attention" if getattr(self, "sliding_window", None) else "full_attention"
        return [kind] * self.num_hidden_layers

    def base_config(self) -> PretrainedConfig:
        """Config of the source architecture holding the stored layers (one "layer" per stored layer)."""
        fields = {k: v for k, v in self.to_dict().items() if k not in _NOT_BASE_KEYS}
        if self.stored_layer_types is not None:
            fields["layer_types"] = list(self.stored_layer_types)
        return AutoConfig.for_model(self.base_model_type, num_hidden_layers=self.num_stored_layers,
                                    **fields)


class _HopCache:
    """View of a Cache for one hop: the layer's `update(k, v, its_own_layer_idx)` lands on the hop's entry."""

    def __init__(self, cache, hop: int):
        self._cache, self._hop = cache, hop

    def update(self, key_states, value_states, layer_idx=None, *args, **kwargs):
        return self._cache.update(key_states, value_states, self._hop, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._cache, name)


class LayerPathForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = LayerPathConfig
    base_model_prefix = "model"
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _supports_sdpa = True
    _supports_flash_attn = True
    _skip_keys_device_placement = ["cache", "past_key_values"]  # the names of 5.24+ and 5.0-5.23

    def __init__(self, config: LayerPathConfig):
        super().__init__(config)
        unsupported = set(config.hop_attention_types()) - set(_MASK_BUILDERS)
        if unsupported:
            raise ValueError(f"unsupported attention types {sorted(unsupported)}; known: {sorted(_MASK_BUILDERS)}")
        # the base decoder (embed_tokens, layers = the stored layers, norm, rotary_emb); its own forward is unused
        self.model = AutoModel.from_config(config.base_config(),
                                           attn_implementation=config._attn_implementation)
        self._no_split_modules = self.model._no_split_modules
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    # ---- assembly from live modules (search time, export) -------------------------------------------------

    @classmethod
    def from_sources(cls, models, path_layers, path_scales=None, source_names=None) -> LayerPathForCausalLM:
        """Assemble from loaded HF causal LMs of one family; stored layer ids: all layers of models[0],
        then models[1], ... . Shares every module with the sources (no copy)."""
        if not models:
            raise ValueError("need at least one source model")
        names = list(source_names) if source_names is not None else [f"model{k}" for k in range(len(models))]
        if len(names) != len(models):
            raise ValueError(f"{len(models)} models but {len(names)} source names")
        base = models[0].config
        for name, m in zip(names, models):
            if not isinstance(getattr(getattr(m, "model", None), "layers", None), nn.ModuleList):
                raise ValueError(f"source {name}: expected a decoder-only LM with model.model.layers")
            c = m.config
            for key in ("model_type", "hidden_size", "_attn_implementation"):
                if getattr(c, key) != getattr(base, key):
                    raise ValueError(f"source {name}: {key}={getattr(c, key)!r} differs from model A's "
                                     f"{getattr(base, key)!r}")
        has_types = getattr(base, "layer_types", None) is not None
        stored_types = ([t for m in models for t in m.config.layer_types[:m.config.num_hidden_layers]]
                        if has_types else None)
        origins = [f"{name}.layers.{i}" for name, m in zip(names, models)
                   for i in range(len(m.model.layers))]
        fields = {k: v for k, v in base.to_dict().items() if k not in _NOT_BASE_KEYS}
        config = LayerPathConfig(base_model_type=base.model_type, num_stored_layers=len(origins),
                                 stored_layer_types=stored_types, stored_layer_origins=origins,
                                 path_layers=path_layers, path_scales=path_scales, **fields)
        config._attn_implementation = base._attn_implementation
        layers = [layer for m in models for layer in m.model.layers]
        return cls._assemble(config, models[0], layers)

    def compact(self) -> LayerPathForCausalLM:
        """A model storing only the layers the path visits (shared modules, no copy), path re-indexed."""
        c = self.config
        used = sorted(set(c.path_layers))
        new_index = {old: new for new, old in enumerate(used)}
        fields = {k: v for k, v in c.to_dict().items() if k not in _NOT_BASE_KEYS}
        config = LayerPathConfig(
            base_model_type=c.base_model_type, num_stored_layers=len(used),
            stored_layer_types=None if c.stored_layer_types is None else [c.stored_layer_types[i] for i in used],
            stored_layer_origins=None if c.stored_layer_origins is None else [c.stored_layer_origins[i] for i in used],
            path_layers=[new_index[i] for i in c.path_layers], path_scales=c.path_scales, **fields)
        config._attn_implementation = c._attn_implementation
        return self._assemble(config, self, [self.model.layers[i] for i in used])

    @classmethod
    def _assemble(cls, config: LayerPathConfig, donor, layers) -> LayerPathForCausalLM:
        """Build on the meta device (no allocation), then plug in the donor's live modules."""
        with torch.device("meta"):
            model = cls(config)
        for name, _ in list(model.model.named_children()):
            setattr(model.model, name, getattr(donor.model, name))
        model.model.layers = nn.ModuleList(layers)
        model.lm_head = donor.lm_head
        model.generation_config = copy.deepcopy(donor.generation_config)
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        assert not left, f"unassembled tensors: {left[:5]}"
        return model.train(donor.training)

    def set_path(self, path_layers, path_scales=None) -> None:
        """Point the model at another path; cheap (no weights touched). Caches from the old path are invalid."""
        self.config.set_path(path_layers, path_scales)

    # ---- inference ------------------------------------------------------------------------------------

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None,
                inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0,
                past_key_values=None, **kwargs) -> CausalLMOutputWithPast:
        # `cache` is what transformers >= 5.24 passes, `past_key_values` what 5.0-5.23 pass
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if cache is not None and past_key_values is not None:
            raise ValueError("pass the cache as `cache` or as `past_key_values`, not both")
        cache = cache if cache is not None else past_key_values
        config, base = self.config, self.model
        if inputs_embeds is None:
            inputs_embeds = base.embed_tokens(input_ids)
        use_cache = config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=config)
        if cache is not None and cache.layers and len(cache.layers) != config.num_hidden_layers:
            raise ValueError(f"cache has {len(cache.layers)} entries, the path {config.num_hidden_layers} "
                             "hops (was the path changed mid-generation?)")
        if position_ids is None:
            seen = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device).unsqueeze(0) + seen

        hop_types = config.hop_attention_types()
        # built from the whole cache, before any hop adds this step's tokens (as the HF base models do)
        masks = {kind: _MASK_BUILDERS[kind](config=config, inputs_embeds=inputs_embeds,
                                            attention_mask=attention_mask, position_ids=position_ids,
                                            **{_CACHE: cache})
                 for kind in set(hop_types)}
        # RoPE depends only on positions: model A's rotary embedding, computed once for all hops
        position_embeddings = base.rotary_emb(inputs_embeds, position_ids)

        hidden = inputs_embeds
        for hop, (index, scale) in enumerate(zip(config.path_layers, config.path_scales)):
            if scale != 1.0:
                hidden = hidden * scale
            hop_cache = None if cache is None else _HopCache(cache, hop)
            out = base.layers[index](
                hidden, attention_mask=masks[hop_types[hop]], position_ids=position_ids,
                use_cache=use_cache, position_embeddings=position_embeddings, **{_CACHE: hop_cache}, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
        hidden = base.norm(hidden)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None if labels is None else self.loss_function(logits=logits, labels=labels,
                                                               vocab_size=config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits,
                                      **{_CACHE: cache if use_cache else None})
