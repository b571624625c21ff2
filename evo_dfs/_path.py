"""The DFS genome -> layer path (Akiba et al. 2025), as pure functions.

Slots: N source models with L_1..L_N layers, M = sum L_k global layers (model 1's, then model 2's, ...),
repeated r times: T = M * r slots; slot t holds global layer t % M. Indicator I (length T): slot t is on
the path iff I_t > 0, in slot order. Paper's rule: the path starts with model A's first layer and ends
with its last one (prepended / appended unless the selected slots already start / end with them).

Scales (one per hop, multiplying the hidden state entering the hop):
  * "matrix": W (M x M, row-major flat): the hop from layer i into layer j is scaled by W[i, j].
  * "wnet":   W produced by a small net of (i, j, t) (t = the hop's slot / T) whose few params are evolved.
The first hop is always embedding -> model A's first layer, exactly model A's own first hop, so its
scale is fixed at 1 (no parameter). Hence at paper scale the genome is T + M*M = 192 + 4096 = 4288.

    layout = SlotLayout(layers_per_model=(32, 32), repeats=3)
    scales = make_scale_model("matrix", layout)
    path = layer_path(indicator, w_flat, scales)          # LayerPath(layers=(0, 1, ...), scales=(1.0, ...))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evo_core import Registry


@dataclass(frozen=True)
class SlotLayout:
    layers_per_model: tuple[int, ...]
    repeats: int = 1

    def __post_init__(self):
        if not self.layers_per_model or min(self.layers_per_model) < 1:
            raise ValueError(f"layers_per_model must be positive counts, got {self.layers_per_model}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        object.__setattr__(self, "layers_per_model", tuple(int(n) for n in self.layers_per_model))

    @classmethod
    def of(cls, models, repeats: int = 1) -> SlotLayout:
        """Layout for loaded HF causal LMs (model A first)."""
        return cls(layers_per_model=tuple(len(m.model.layers) for m in models), repeats=repeats)

    @property
    def num_layers(self) -> int:  # M
        return sum(self.layers_per_model)

    @property
    def num_slots(self) -> int:  # T
        return self.num_layers * self.repeats

    @property
    def layer_owner(self) -> tuple[int, ...]:
        """Source-model index of each global layer."""
        return tuple(k for k, n in enumerate(self.layers_per_model) for _ in range(n))

    @property
    def first_layer(self) -> int:  # model A's first layer (global index)
        return 0

    @property
    def last_layer(self) -> int:  # model A's last layer (global index)
        return self.layers_per_model[0] - 1

    def identity_slots(self) -> np.ndarray:
        """Bool mask over slots: model A's layers in the first repetition (the path = model A)."""
        mask = np.zeros(self.num_slots, dtype=bool)
        mask[: self.layers_per_model[0]] = True
        return mask


@dataclass(frozen=True)
class LayerPath:
    layers: tuple[int, ...]   # global layer index per hop
    scales: tuple[float, ...]  # multiplier on the hidden state entering each hop (scales[0] == 1)

    def __post_init__(self):
        assert len(self.layers) == len(self.scales) and self.layers, "a path has >= 1 hop, one scale each"


def select_hops(indicator, layout: SlotLayout) -> tuple[list[int], list[int]]:
    """(layers, slots) per hop from the indicator; pinned hops get slot 0 (start) and T (end)."""
    ind = np.asarray(indicator, dtype=float)
    if ind.shape != (layout.num_slots,):
        raise ValueError(f"indicator has shape {ind.shape}, expected ({layout.num_slots},)")
    slots = [int(t) for t in np.flatnonzero(ind > 0)]
    layers = [t % layout.num_layers for t in slots]
    if not layers or layers[0] != layout.first_layer:
        layers, slots = [layout.first_layer] + layers, [0] + slots
    if layers[-1] != layout.last_layer:
        layers, slots = layers + [layout.last_layer], slots + [layout.num_slots]
    return layers, slots


class MatrixScales:
    """W[i, j] (M x M) scales the hop from layer i into layer j; params = W flattened row-major."""

    name = "matrix"
    bounds = (0.0, 2.0)

    def __init__(self, layout: SlotLayout):
        self.layout = layout

    @property
    def num_params(self) -> int:
        return self.layout.num_layers ** 2

    def param_names(self) -> list[str]:
        m = self.layout.num_layers
        w = max(2, len(str(m - 1)))
        return [f"W.i{i:0{w}d}.j{j:0{w}d}" for i in range(m) for j in range(m)]

    def x0(self) -> np.ndarray:
        return np.ones(self.num_params)

    def hop_scales(self, params, layers, slots) -> list[float]:
        w = _check_params(params, self.num_params).reshape(self.layout.num_layers, -1)
        return [1.0] + [float(w[i, j]) for i, j in zip(layers[:-1], layers[1:])]


class WNet:
    """scale(i, j, t) = 1 + v . tanh(U f + b) + c, f = (i / (M-1), j / (M-1), t / T); params = [U, b, v, c].

    x0: U, b drawn once from a fixed seed, v = c = 0 -> every scale is exactly 1 and perturbing v at once
    gives (i, j, t)-dependent scales (an all-zero start would make the net constant until U moves).
    """

    name = "wnet"
    bounds = (-3.0, 3.0)
    num_features = 3

    def __init__(self, layout: SlotLayout, *, hidden: int = 8, seed: int = 0):
        if hidden < 1:
            raise ValueError(f"WNet hidden size must be >= 1, got {hidden}")
        self.layout, self.hidden, self.seed = layout, hidden, seed

    @property
    def num_params(self) -> int:
        return self.hidden * self.num_features + 2 * self.hidden + 1

    def param_names(self) -> list[str]:
        w = max(3, len(str(self.num_params - 1)))
        return [f"wnet.p{k:0{w}d}" for k in range(self.num_params)]

    def x0(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        u_b = rng.normal(0.0, 1.0, self.hidden * (self.num_features + 1))
        return np.concatenate([np.clip(u_b, *self.bounds), np.zeros(self.hidden + 1)])

    def _unpack(self, params):
        p = _check_params(params, self.num_params)
        h, f = self.hidden, self.num_features
        u = p[: h * f].reshape(h, f)
        b = p[h * f: h * f + h]
        v = p[h * f + h: h * f + 2 * h]
        return u, b, v, p[-1]

    def scale(self, params, i, j, t) -> np.ndarray:
        """Scales for arrays of (source layer i, target layer j, slot t); broadcasts."""
        u, b, v, c = self._unpack(params)
        m1 = max(self.layout.num_layers - 1, 1)
        feats = np.stack(np.broadcast_arrays(np.asarray(i) / m1, np.asarray(j) / m1,
                                             np.asarray(t) / self.layout.num_slots), axis=-1)
        return 1.0 + np.tanh(feats @ u.T + b) @ v + c

    def hop_scales(self, params, layers, slots) -> list[float]:
        rest = self.scale(params, layers[:-1], layers[1:], slots[1:]) if len(layers) > 1 else []
        return [1.0] + [float(s) for s in rest]


SCALE_MODELS: Registry[type] = Registry("scale model")
for _cls in (MatrixScales, WNet):
    SCALE_MODELS.register(_cls.name, _cls)


def make_scale_model(name: str, layout: SlotLayout, **kwargs):
    """Scale parametrisation by name ("matrix", "wnet"); kwargs go to its constructor (WNet: hidden, seed)."""
    return SCALE_MODELS.get(name)(layout, **kwargs)


def layer_path(indicator, scale_params, scale_model) -> LayerPath:
    """The path (global layer per hop) and per-hop scales for one genome."""
    layers, slots = select_hops(indicator, scale_model.layout)
    return LayerPath(layers=tuple(layers), scales=tuple(scale_model.hop_scales(scale_params, layers, slots)))


def _check_params(params, n: int) -> np.ndarray:
    p = np.asarray(params, dtype=float).reshape(-1)
    if p.size != n:
        raise ValueError(f"expected {n} scale parameters, got {p.size}")
    return p
