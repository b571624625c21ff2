"""The parameter-space search space: which numbers a trial picks, and which tensors each one sets.

    space = build_space(method=merge_method("dare_ties"), sources=pool.source_names,
                        tensor_names=pool.param_names, num_layers=pool.num_layers, granularity=1)
    space.params          # ParamSpecs for the study: "embed.ja.weight", "L03.ja.density", ...
    values = {p.name: trial.suggest_float(p.name, p.low, p.high) for p in space.params}
    merger.apply(space.tensor_params(values), seed=trial.number)

Groups: `embed` (token embeddings), one per `granularity` consecutive layers (`L03`, or `L00-01`
for granularity 2; the paper's is 1), `head` (final norm + lm_head); split_components=True splits
each layer group into `.attn` (self_attn.*, incl. q/k norms), `.mlp` and `.norm` (the block's
layernorms), e.g. `L03.attn.ja.weight`. uniform=True: one group `all` for every tensor (one value
per source and parameter), the baseline a per-layer search has to beat. Parameter names are
`<group>.<source>.<param>` for per-source parameters (weight, density) and `<group>.<param>` for
shared ones (slerp's t). Tensor names follow the Llama/Mistral/Qwen2/Qwen3 layout
(`...layers.<i>.<part>...`, `embed_tokens`, final `norm`, `lm_head`).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evo_core import ParamSpec

from ._methods import MergeMethod

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.([^.]+)\.")
_COMPONENTS = {"self_attn": "attn", "mlp": "mlp"}


def tensor_group(name: str, *, num_layers: int, granularity: int = 1, split_components: bool = False) -> str:
    """The group of one tensor: 'embed', 'head', or its layer group (+ '.attn'/'.mlp'/'.norm')."""
    match = _LAYER.search(name)
    if match is None:
        if "embed_tokens" in name:
            return "embed"
        if name.startswith("lm_head.") or re.search(r"(?:^|\.)norm\.weight$", name):
            return "head"
        raise ValueError(f"tensor {name} is neither a layer, embed_tokens, the final norm nor lm_head")
    layer, part = int(match[1]), match[2]
    if layer >= num_layers:
        raise ValueError(f"tensor {name} names layer {layer} but the model has {num_layers} layers")
    width = max(2, len(str(num_layers - 1)))
    first = layer - layer % granularity
    group = f"L{first:0{width}d}" if granularity == 1 else f"L{first:0{width}d}-{first + granularity - 1:0{width}d}"
    if not split_components:
        return group
    component = _COMPONENTS.get(part) or ("norm" if part.endswith("norm") else None)
    if component is None:
        raise ValueError(f"tensor {name}: layer part {part!r} is not attention, MLP or a norm")
    return f"{group}.{component}"


@dataclass(frozen=True)
class Placement:
    """Where one searched value goes: a group, a source (None for shared parameters), a parameter."""

    group: str
    source: str | None
    key: str

    @property
    def name(self) -> str:
        return ".".join(part for part in (self.group, self.source, self.key) if part is not None)


@dataclass(frozen=True)
class SearchSpace:
    method: MergeMethod
    sources: tuple[str, ...]
    groups: tuple[str, ...]
    placements: tuple[Placement, ...]
    params: tuple[ParamSpec, ...]  # aligned with placements
    group_of: Mapping[str, str]  # tensor name -> group

    def tensor_params(self, values: Mapping[str, float]) -> dict[str, dict[str, Any]]:
        """Flat {param name: value} (one per `params`) -> per-tensor merge parameters."""
        names = {p.name for p in self.params}
        if set(values) != names:
            missing, extra = sorted(names - set(values)), sorted(set(values) - names)
            raise ValueError(f"values must give exactly the {len(names)} space parameters; "
                             f"missing {missing[:3]}, unknown {extra[:3]}")
        per_group: dict[str, dict[str, Any]] = {group: {key: {} for key in self.method.per_source}
                                                for group in self.groups}
        for place in self.placements:
            if place.source is None:
                per_group[place.group][place.key] = float(values[place.name])
            else:
                per_group[place.group][place.key][place.source] = float(values[place.name])
        return {tensor: per_group[group] for tensor, group in self.group_of.items()}

    def broadcast(self, values: Mapping[str, float]) -> dict[str, float]:
        """The same values in every group: {'<source>.<param>' or '<param>': v} -> flat values.

        E.g. a uniform-space result as a start point of a per-layer search (strip its 'all.').
        """
        out = {}
        for place in self.placements:
            key = place.key if place.source is None else f"{place.source}.{place.key}"
            if key not in values:
                raise ValueError(f"broadcast needs a value for {key!r} (for {place.name})")
            out[place.name] = float(values[key])
        return out


def build_space(*, method: MergeMethod, sources: Sequence[str], tensor_names: Sequence[str], num_layers: int,
                granularity: int = 1, split_components: bool = False, uniform: bool = False,
                bounds: Mapping[str, Sequence[float]] | None = None) -> SearchSpace:
    """The space for `method` over `sources`; bounds per parameter kind, default the method's own
    (_methods.py: [0, 1] for weights and fractions, della's density inside (epsilon, 1 - epsilon))."""
    if not isinstance(granularity, int) or granularity < 1 or num_layers % granularity:
        divisors = [g for g in range(1, num_layers + 1) if num_layers % g == 0]
        raise ValueError(f"granularity {granularity} must divide the {num_layers} layers exactly; "
                         f"choose one of {divisors}")
    if not sources or any(not s or "." in s for s in sources):
        raise ValueError(f"sources must be non-empty names without dots; got {list(sources)}")
    if not method.params:
        raise ValueError(f"{method.name} has no per-tensor parameters: nothing to search; merge it once "
                         f"(InMemoryMerger.apply with {{}} per tensor) or export it (mergekit_yaml)")
    ranges = _bounds(method, bounds)
    if uniform:
        group_of = {name: "all" for name in tensor_names}
    else:
        group_of = {name: tensor_group(name, num_layers=num_layers, granularity=granularity,
                                       split_components=split_components) for name in tensor_names}
    groups = tuple(sorted(set(group_of.values()), key=_group_order))
    placements = tuple(Placement(group, source, key) for group in groups for source in sources for key in method.per_source)
    placements += tuple(Placement(group, None, key) for group in groups for key in method.shared)
    params = tuple(ParamSpec(name=place.name, low=ranges[place.key][0], high=ranges[place.key][1]) for place in placements)
    return SearchSpace(method=method, sources=tuple(sources), groups=groups, placements=placements, params=params,
                       group_of=group_of)


def _group_order(group: str) -> tuple:
    # embed first, layers in order (components attn, mlp, norm), head last
    head = group.split(".")[0]
    return (0 if head == "embed" else 2 if head == "head" else 1, group)


def _bounds(method: MergeMethod, bounds: Mapping[str, Sequence[float]] | None) -> dict[str, tuple[float, float]]:
    """Each searched parameter's bounds: `bounds` or the method's defaults, checked by its rules."""
    unknown = set(bounds or {}) - set(method.searched)
    if unknown:
        raise ValueError(f"{method.name} searches {', '.join(method.searched)}; "
                         f"no bounds for {', '.join(sorted(unknown))}")
    ranges = {}
    for param in method.params:
        lo, hi = (float(v) for v in (bounds or {}).get(param.name, param.default_bounds(method.options)))
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"{param.name} bounds must be finite with low < high; got [{lo}, {hi}]")
        problem = param.check_bounds and param.check_bounds(lo, hi, method.options)
        if problem:
            raise ValueError(f"{method.name} {param.name} bounds {problem}; got [{lo}, {hi}]")
        ranges[param.name] = (lo, hi)
    return ranges
