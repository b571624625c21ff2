"""The DFS search space for the study loop: stable parameter names, bounds, the paper's x0, genomes.

Genome = one flat float vector [I (T slots) | scale params (W: M*M row-major, or WNet params)], in the
order of `names()`: "I.t000".. then "W.i00.j00".. or "wnet.p000"..

    space = DFSSpace(layout=SlotLayout(layers_per_model=(4, 4), repeats=2), scales="matrix")
    space.names(); space.bounds(); space.x0()             # Optuna: suggest_float(name, *bounds[name])
    path = space.path(trial.params)                        # or space.path(vector)
    s = evo_core.pack_genome(space.vector(trial.params))   # one compact string per trial (user attr)

Initialisation (paper): model A's slots of the first repetition start on (I = +init), every other slot
off (I = -init), all scales 1 -> x0 decodes to model A itself.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from evo_dfs._path import LayerPath, SlotLayout, layer_path, make_scale_model


class DFSSpace:
    def __init__(self, *, layout: SlotLayout, scales: str = "matrix", indicator_bound: float = 1.0,
                 indicator_init: float = 0.5, **scale_kwargs):
        if not 0 < indicator_init <= indicator_bound:
            raise ValueError(f"need 0 < indicator_init <= indicator_bound, got {indicator_init}, {indicator_bound}")
        self.layout = layout
        self.scale_model = make_scale_model(scales, layout, **scale_kwargs)
        self.indicator_bound, self.indicator_init = float(indicator_bound), float(indicator_init)
        w = max(3, len(str(layout.num_slots - 1)))
        self._names = [f"I.t{t:0{w}d}" for t in range(layout.num_slots)] + self.scale_model.param_names()

    @property
    def dim(self) -> int:
        return len(self._names)

    def names(self) -> list[str]:
        return list(self._names)

    def bounds_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        t = self.layout.num_slots
        lo = np.r_[np.full(t, -self.indicator_bound), np.full(self.scale_model.num_params, self.scale_model.bounds[0])]
        hi = np.r_[np.full(t, self.indicator_bound), np.full(self.scale_model.num_params, self.scale_model.bounds[1])]
        return lo, hi

    def bounds(self) -> dict[str, tuple[float, float]]:
        lo, hi = self.bounds_arrays()
        return {n: (float(a), float(b)) for n, a, b in zip(self._names, lo, hi)}

    def x0_vector(self) -> np.ndarray:
        ind = np.where(self.layout.identity_slots(), self.indicator_init, -self.indicator_init)
        return np.r_[ind, self.scale_model.x0()]

    def x0(self) -> dict[str, float]:
        return self.params(self.x0_vector())

    def vector(self, params: Mapping[str, float]) -> np.ndarray:
        missing = [n for n in self._names if n not in params]
        if missing:
            raise ValueError(f"{len(missing)} DFS parameters missing, e.g. {missing[:3]}")
        return np.array([params[n] for n in self._names], dtype=float)

    def params(self, vector) -> dict[str, float]:
        v = self._check(vector)
        return dict(zip(self._names, map(float, v)))

    def path(self, genome) -> LayerPath:
        """Path of a genome given as a vector or as a {name: value} mapping (e.g. Optuna trial.params)."""
        v = self.vector(genome) if isinstance(genome, Mapping) else self._check(genome)
        t = self.layout.num_slots
        return layer_path(v[:t], v[t:], self.scale_model)

    def _check(self, vector) -> np.ndarray:
        v = np.asarray(vector, dtype=float).reshape(-1)
        if v.size != self.dim:
            raise ValueError(f"genome has {v.size} values, the space {self.dim}")
        return v


