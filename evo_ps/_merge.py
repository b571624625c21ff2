"""In-memory merging into the pool's live model, with mergekit 0.1.5's semantics, per trial.

    from evo_ps import InMemoryMerger, merge_method
    method = merge_method("dare_ties")                        # or ("della", {"epsilon": 0.1})
    merger = InMemoryMerger(pool=pool, method=method)         # task vectors computed once, here
    merger.apply(tensor_params, seed=trial.number)            # live weights overwritten in place

`tensor_params` maps every parameter name of the pool to that tensor's merge parameters:
per-source ones as {param: {source: value}} and shared ones as {param: value}, e.g.
{"model.layers.3.mlp.up_proj.weight": {"weight": {"ja": 0.7, "math": 0.4},
                                       "density": {"ja": 0.5, "math": 0.9}}}
(slerp: {"t": 0.3}). `SearchSpace.tensor_params` builds it from a trial's flat values.

What each method computes (mergekit 0.1.5, merge_methods/generalized_task_arithmetic.py,
sparsify.py, linear.py, slerp.py), with d_i = source_i - base:
  linear            sum_i w_i x_i / sum_i w_i   (normalize; x_i the sources, base not an input)
  task_arithmetic   base + lambda * sum_i w_i d_i            (/ sum_i w_i if normalize)
  ties              d_i -> top-density share by |d_i|; then TIES sign election (below)
  dare_ties         d_i -> Bernoulli(density) mask, rescaled so sum|d_i| is kept (L1, not 1/p)
  della             like dare_ties, keep-probability density +- epsilon by per-row |d_i| rank
  slerp             spherical interpolation from source 1 (t=0) to source 2 (t=1) per tensor
TIES sign election: W_i = w_i * sparse(d_i); the sign of sum_i W_i wins per element; mixed = sum of
the W_i with that sign; with normalize, divided by the sum of the w_i with that sign (0 -> 1);
times lambda; added to base. density >= 1 leaves d_i whole (no rescale), density <= 0 drops it.
Embeddings, norms and lm_head are merged like any other tensor (same vocabulary).

Deviations, all below measurement: the Bernoulli keep-probability is quantized to 1/65536 (masks
come from 16-bit random integers: ~20x cheaper than torch.bernoulli on CPU); della's per-element
rank term is cached in float16; ties keeps every element tied with the k-th largest |d| (the
threshold is looked up in |d| sorted once per study); linear with weights summing to 0 divides by 1
(mergekit gives inf/NaN). Arithmetic is float32 (float64
for float64 pools) on chunks of `chunk_elements`, so half-precision pools are merged in float32
(their task vectors are stored in the pool dtype, as mergekit's own half-precision merge has them).

Randomness: each (tensor, source) mask is drawn from its own generator seeded from (seed, tensor
name, source name), so a trial is reproducible from its seed (on CPU the masks are even the same for
any chunk size; the rescaling sums then differ in rounding only).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

TensorParams = Mapping[str, Mapping[str, Any]]

_L1_EPS = 1e-7  # mergekit sparsify.rescaled_masked_tensor: no rescale when either L1 sum is below
_SLERP_DOT_THRESHOLD = 0.9995  # mergekit slerp: interpolate linearly when nearly collinear
_SLERP_NORM_EPS = 1e-8


@dataclass(frozen=True)
class MergeMethod:
    """One merge method, declared by what it searches and how it combines task vectors.

    per_source: searched parameters with one value per source (weight, density);
    shared: searched parameters with one value for all sources (slerp's t);
    sparsify: how each task vector is thinned before combining (None, magnitude, random, della);
    consensus: TIES sign election; options: fixed (not searched) settings with mergekit's defaults.
    """

    name: str
    combine: str  # "linear" | "slerp" | "task_arithmetic" (sum of task vectors, maybe elected)
    per_source: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    sparsify: str | None = None
    consensus: bool = False
    options: Mapping[str, float | bool] = field(default_factory=dict)

    def __post_init__(self):
        assert self.combine in ("linear", "slerp", "task_arithmetic"), self.combine
        assert self.sparsify in (None, "magnitude", "random", "della"), self.sparsify
        assert not self.sparsify or (self.consensus and "density" in self.per_source), self.name

    @property
    def searched(self) -> tuple[str, ...]:
        return self.per_source + self.shared

    def with_options(self, options: Mapping[str, Any] | None) -> MergeMethod:
        """A copy with some options overridden; unknown options fail listing the known ones."""
        unknown = set(options or {}) - set(self.options)
        if unknown:
            raise ValueError(f"merge method {self.name!r} has no option {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(self.options) or 'none'}")
        merged = {**self.options, **(options or {})}
        for key, value in merged.items():
            if type(value) is not type(self.options[key]) and not (
                    isinstance(self.options[key], float) and isinstance(value, int) and not isinstance(value, bool)):
                raise ValueError(f"merge option {key!r} must be a {type(self.options[key]).__name__}; got {value!r}")
        if "epsilon" in merged and not 0 < merged["epsilon"] < 0.5:
            raise ValueError(f"della epsilon must be in (0, 0.5); got {merged['epsilon']}")
        return replace(self, options={k: float(v) if isinstance(self.options[k], float) else v
                                      for k, v in merged.items()})


_GTA = ("weight", "density")
METHODS: dict[str, MergeMethod] = {m.name: m for m in (
    MergeMethod(name="linear", combine="linear", per_source=("weight",), options={"normalize": True}),
    MergeMethod(name="task_arithmetic", combine="task_arithmetic", per_source=("weight",),
                options={"normalize": False, "lambda": 1.0}),
    MergeMethod(name="ties", combine="task_arithmetic", per_source=_GTA, sparsify="magnitude",
                consensus=True, options={"normalize": True, "rescale": False, "lambda": 1.0}),
    MergeMethod(name="dare_ties", combine="task_arithmetic", per_source=_GTA, sparsify="random",
                consensus=True, options={"normalize": False, "rescale": True, "lambda": 1.0}),
    MergeMethod(name="della", combine="task_arithmetic", per_source=_GTA, sparsify="della", consensus=True,
                options={"normalize": True, "rescale": True, "lambda": 1.0, "epsilon": 0.15}),
    MergeMethod(name="slerp", combine="slerp", shared=("t",)),
)}


def merge_method(name: str, options: Mapping[str, Any] | None = None) -> MergeMethod:
    """The registered method `name` with `options` (mergekit's names: normalize, rescale, lambda,
    epsilon) overriding its defaults."""
    if name not in METHODS:
        raise ValueError(f"unknown merge method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name].with_options(options)


def _seed_for(seed: int, tensor: str, source: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{tensor}/{source}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch seeds are < 2**63 on every device


class InMemoryMerger:
    """Merges the pool's sources into its live model, in place, once per `apply`.

    Resident on the pool's device: the base and one task vector per source (pool dtype), plus
    scratch for one chunk and, for sparsifying methods, one 0/1 keep mask per source for the largest
    tensor. Ties also keeps each task vector's |d| sorted, in CPU memory (one more copy of them).
    chunk_elements: elements per step (multiple of 4); default 2**18 on CPU (the chunk's scratch
    stays in cache; fastest measured), 2**24 elsewhere.
    """

    def __init__(self, *, pool, method: MergeMethod | str, chunk_elements: int | None = None):
        self.method = merge_method(method) if isinstance(method, str) else method
        self.sources = pool.source_names
        if self.method.combine == "slerp" and len(self.sources) != 2:
            raise ValueError(f"slerp merges exactly 2 source models; the pool has {len(self.sources)}: "
                             f"{', '.join(self.sources)}")
        device = pool.device
        self.chunk = chunk_elements or (2**18 if device.type == "cpu" else 2**24)
        if self.chunk <= 0 or self.chunk % 4:
            raise ValueError(f"chunk_elements must be a positive multiple of 4; got {self.chunk}")
        self.names = pool.param_names
        live = pool.live_params()
        self._out = {k: live[k].data.view(-1) for k in self.names}
        self._compute = torch.float64 if pool.dtype == torch.float64 else torch.float32
        self._staged = pool.dtype != self._compute  # half pools: compute in float32, then cast
        n_src, max_numel = len(self.sources), max(t.numel() for t in pool.base.values())
        chunk = min(self.chunk, max_numel + (-max_numel) % 4)

        with torch.no_grad():
            self._base = {k: pool.base[k].to(device).view(-1) for k in self.names}
            self._deltas = [{k: (pool.sources[s][k].to(device).view(-1) - self._base[k]) for k in self.names}
                            for s in self.sources]
            opts = self.method.options
            if self.method.sparsify and opts["rescale"]:
                self._l1 = {k: [d[k].abs().sum().item() for d in self._deltas] for k in self.names}
            if self.method.sparsify == "della":
                self._rank = [{k: _row_rank(pool.base[k].shape, d[k]) for k in self.names} for d in self._deltas]
            if self.method.combine == "slerp":
                self._dot = {k: _slerp_dot(self._base[k], self._deltas[0][k], self._deltas[1][k]) for k in self.names}

        def buf(*shape, dtype=self._compute):
            return torch.empty(*shape, dtype=dtype, device=device)

        self._w = buf(n_src, chunk)  # weighted task-vector chunk per source
        self._o = buf(chunk)  # staged output chunk (half pools)
        if self.method.consensus:
            self._sum, self._sign, self._div = buf(chunk), buf(chunk), buf(chunk)
            self._flag = buf(chunk, dtype=torch.uint8)
        if self.method.sparsify:
            # keep masks (0/1) in the pool dtype: multiplying by them needs no conversion
            self._keeps = buf(n_src, max_numel, dtype=pool.dtype)
            self._scratch = buf(chunk)
        if self.method.sparsify in ("random", "della"):
            self._bits = buf(chunk // 4, dtype=torch.int64)
            self._gens = [torch.Generator(device=device) for _ in self.sources]
        if self.method.sparsify == "magnitude":
            # ascending |d| per tensor and source, sorted on the device (fast on a GPU; ~16 s per 100M
            # values on one CPU thread, once per study) and kept in CPU memory: a trial's threshold
            # (the k-th largest |d|) is then one lookup instead of a selection over the tensor
            self._sorted = [{k: d[k].abs().sort().values.cpu() for k in self.names} for d in self._deltas]

    # ---------------------------------------------------------------- public
    def apply(self, tensor_params: TensorParams, *, seed: int = 0) -> None:
        """Overwrite every live parameter with the merge given by `tensor_params` (see module doc)."""
        self.check(tensor_params)
        with torch.no_grad():
            for k in self.names:
                p = tensor_params[k]
                if self.method.consensus:
                    self._elect(k, p, seed)
                else:
                    self._axpy(k, *self._coefficients(k, p))

    def check(self, tensor_params: TensorParams) -> None:
        """One-line errors for missing/extra tensors or parameters and out-of-range densities."""
        if set(tensor_params) != set(self.names):
            missing = sorted(set(self.names) - set(tensor_params))
            extra = sorted(set(tensor_params) - set(self.names))
            raise ValueError(f"tensor params must cover exactly the model's {len(self.names)} parameters; "
                             f"missing {missing[:3]}, unknown {extra[:3]}")
        for k in self.names:
            p = tensor_params[k]
            if set(p) != set(self.method.searched):
                raise ValueError(f"tensor {k}: {self.method.name} needs {sorted(self.method.searched)}; "
                                 f"got {sorted(p)}")
            for name in self.method.per_source:
                if set(p[name]) != set(self.sources):
                    raise ValueError(f"tensor {k}: {name} must give one value per source "
                                     f"{list(self.sources)}; got {sorted(p[name])}")
            if self.method.sparsify == "della":
                eps = self.method.options["epsilon"]
                for src, density in p["density"].items():
                    if 0 < density < 1 and not (density - eps > 0 and density + eps < 1):
                        raise ValueError(f"tensor {k}: della density {density} of {src} +- epsilon {eps} "
                                         f"must stay in (0, 1)")

    # ---------------------------------------------------------------- deterministic: c0*base + sum c_i d_i
    def _coefficients(self, k: str, p: Mapping[str, Any]) -> tuple[float, list[float]]:
        combine, opts = self.method.combine, self.method.options
        if combine == "slerp":
            c_a, c_b = _slerp_coefficients(p["t"], self._dot[k])
            return c_a + c_b, [c_a, c_b]
        w = [float(p["weight"][s]) for s in self.sources]
        total = sum(w)
        div = total if opts["normalize"] and abs(total) >= 1e-8 else 1.0
        if combine == "linear":  # the sources themselves: sum w_i (base + d_i) / div
            return total / div, [wi / div for wi in w]
        return 1.0, [opts["lambda"] * wi / div for wi in w]

    def _axpy(self, k: str, c0: float, coefs: list[float]) -> None:
        base, out = self._base[k], self._out[k]
        for lo in range(0, base.numel(), self.chunk):
            hi = min(lo + self.chunk, base.numel())
            o = self._o[: hi - lo] if self._staged else out[lo:hi]
            o.copy_(base[lo:hi])
            if c0 != 1.0:
                o.mul_(c0)
            for delta, c in zip(self._deltas, coefs):
                if c != 0.0:
                    o.add_(delta[k][lo:hi], alpha=c)
            if self._staged:
                out[lo:hi].copy_(o)

    # ---------------------------------------------------------------- sparsify + TIES election
    # (bool tensors are slow on CPU: masks are 0/1 floats, signs are float arithmetic)
    def _elect(self, k: str, p: Mapping[str, Any], seed: int) -> None:
        opts, n = self.method.options, self._base[k].numel()
        weights = [float(p["weight"][s]) for s in self.sources]
        densities = [float(p["density"][s]) for s in self.sources]
        masked = [0 < d < 1 for d in densities]
        coef = [w if d > 0 else 0.0 for w, d in zip(weights, densities)]
        for i in (i for i, m in enumerate(masked) if m):
            kept = self._keep_mask(k, i, densities[i], seed)
            before = self._l1[k][i] if opts["rescale"] else 0.0
            if opts["rescale"] and before >= _L1_EPS and kept >= _L1_EPS:
                coef[i] *= before / kept
        base, out = self._base[k], self._out[k]
        for lo in range(0, n, self.chunk):
            hi = min(lo + self.chunk, n)
            c = hi - lo
            W = self._w[:, :c]
            for i, delta in enumerate(self._deltas):
                if self._staged:
                    W[i].copy_(delta[k][lo:hi]).mul_(coef[i])
                else:
                    torch.mul(delta[k][lo:hi], coef[i], out=W[i])
                if masked[i]:
                    W[i].mul_(self._keeps[i, lo:hi])
            # majority sign of the summed weighted deltas, 0 counting as +: flip each W_i to that
            # sign; the entries that agree with it are then exactly the positive ones
            total = _sum_rows(W, out=self._sum[:c])
            sign = torch.sign(total, out=self._sign[:c]).add_(0.5).sign_()
            for row in W:
                row.mul_(sign).clamp_(min=0)
            mixed = _sum_rows(W, out=self._sum[:c]).mul_(sign)
            if opts["normalize"]:  # divide by the summed weights of the agreeing sources (0 -> 1)
                div = torch.mul(W[0].sign_(), weights[0], out=self._div[:c])
                for row, w in zip(W[1:], weights[1:]):
                    div.add_(row.sign_(), alpha=w)
                mixed.div_(div.add_(torch.eq(div, 0, out=self._flag[:c])))
            if opts["lambda"] != 1.0:
                mixed.mul_(opts["lambda"])
            if self._staged:
                out[lo:hi].copy_(self._o[:c].copy_(base[lo:hi]).add_(mixed))
            else:
                torch.add(base[lo:hi], mixed, out=out[lo:hi])

    def _keep_mask(self, k: str, i: int, density: float, seed: int) -> float:
        """Fill self._keeps[i] (1.0 = kept) for tensor k; return the kept L1 mass (0.0 unless rescaling)."""
        n = self._base[k].numel()
        delta, keep = self._deltas[i][k], self._keeps[i, :n]
        rescale = self.method.options["rescale"]
        if self.method.sparsify == "magnitude":
            ascending = self._sorted[i][k]
            threshold = ascending[n - max(1, int(density * n))].item()
            kept = torch.zeros((), dtype=torch.float64, device=keep.device)
            for lo in range(0, n, self.chunk):
                hi = min(lo + self.chunk, n)
                mags = _abs(delta[lo:hi], out=self._scratch[: hi - lo])
                torch.ge(mags, threshold, out=keep[lo:hi])
                if rescale:
                    kept += _kept_mass(mags, keep[lo:hi])
            return kept.item()
        gen = self._gens[i]
        gen.manual_seed(_seed_for(seed, k, self.sources[i]))
        kept = torch.zeros((), dtype=torch.float64, device=keep.device)
        eps = self.method.options.get("epsilon", 0.0)
        for lo in range(0, n, self.chunk):
            hi = min(lo + self.chunk, n)
            bits = self._bits[: (hi - lo + 3) // 4].random_(-(2**63), None, generator=gen)
            draws = bits.view(torch.int16)[: hi - lo]  # uniform on [-32768, 32767]
            if self.method.sparsify == "random":
                threshold = round(density * 65536) - 32768  # P(draw < threshold) = density
            else:  # della: keep-probability (density - eps) + rank * 2 eps, rank in [0, 1] per row
                threshold = self._scratch[: hi - lo].copy_(self._rank[i][k][lo:hi])
                threshold.mul_(2 * eps * 65536).add_((density - eps) * 65536 - 32768)
            torch.lt(draws, threshold, out=keep[lo:hi])
            if rescale:
                mags = _abs(delta[lo:hi], out=self._scratch[: hi - lo])
                kept += _kept_mass(mags, keep[lo:hi])
        return kept.item()


def _kept_mass(mags: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """sum(|d| * keep) for one chunk (a dot product when the dtypes allow; `mags` is scratch)."""
    return torch.dot(mags, keep) if mags.dtype == keep.dtype else mags.mul_(keep).sum()


def _abs(x: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    return torch.abs(x, out=out) if x.dtype == out.dtype else out.copy_(x).abs_()


def _sum_rows(rows: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    # a loop of adds: a dim-0 sum over a few strided rows is several times slower on CPU
    out.copy_(rows[0])
    for row in rows[1:]:
        out.add_(row)
    return out


def _row_rank(shape: torch.Size, delta: torch.Tensor) -> torch.Tensor:
    """Della's per-row magnitude rank scaled to [0, 1] (1-D tensors are one row), float16."""
    assert len(shape) <= 2, f"della ranks rows of 1-D/2-D tensors; got shape {tuple(shape)}"
    mags = delta.view(1 if len(shape) < 2 else shape[0], -1).abs()
    order = torch.argsort(mags, dim=1)
    ranks = torch.empty_like(order)
    cols = mags.shape[1]
    ranks.scatter_(1, order, torch.arange(cols, device=mags.device).expand_as(order))
    return (ranks.to(torch.float32) / max(cols - 1, 1)).to(torch.float16).view(-1)


def _slerp_dot(base: torch.Tensor, d_a: torch.Tensor, d_b: torch.Tensor) -> float:
    """Cosine between the two source tensors, as mergekit's slerp computes it (in float64 here)."""
    x, y = base.double() + d_a.double(), base.double() + d_b.double()
    nx, ny = x.norm().item(), y.norm().item()
    nx, ny = (nx if nx > _SLERP_NORM_EPS else 1.0), (ny if ny > _SLERP_NORM_EPS else 1.0)
    return max(-1.0, min(1.0, torch.dot(x / nx, y / ny).item()))


def _slerp_coefficients(t: float, dot: float) -> tuple[float, float]:
    if abs(dot) > _SLERP_DOT_THRESHOLD:
        return 1.0 - t, t
    theta = math.acos(dot)
    return math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)
