"""In-memory merging into the pool's live model, with mergekit 0.1.5's semantics, per trial.

    from evo_ps import InMemoryMerger, merge_method
    method = merge_method("dare_ties")                        # or ("della", {"epsilon": 0.1})
    merger = InMemoryMerger(pool=pool, method=method)         # task vectors computed once, here
    merger.apply(tensor_params, seed=trial.number)            # live weights overwritten in place

`tensor_params` maps every parameter name of the pool to that tensor's merge parameters:
per-source ones as {param: {source: value}} and shared ones as {param: value}, e.g.
{"model.layers.3.mlp.up_proj.weight": {"weight": {"ja": 0.7, "math": 0.4},
                                       "density": {"ja": 0.5, "math": 0.9}}}
(slerp: {"t": 0.3}). `SearchSpace.tensor_params` builds it from a trial's flat values. The methods
are declared in _methods.py (`MERGE_METHODS`); docs/merge-methods.md tabulates them.

Two paths. The chunked engine (fused, allocation-free per trial) computes the generalized task
arithmetic family (mergekit merge_methods/generalized_task_arithmetic.py, sparsify.py, linear.py,
slerp.py), with d_i = source_i - base:
  linear            sum_i w_i x_i / sum_i w_i   (normalize; x_i the sources, base not an input)
  task_arithmetic   base + lambda * sum_i w_i d_i            (/ sum_i w_i if normalize)
  sparsified        d_i thinned first (below), rescaled so sum|d_i| is kept if `rescale` (L1, not 1/p):
                    magnitude (ties): the k = max(1, int(density n)) largest |d_i|;
                    outliers (breadcrumbs): drop the int(gamma n) largest, keep the next int(density n);
                    random (dare_*): a Bernoulli(density) mask;
                    della (della*): keep-probability density +- epsilon by per-row |d_i| rank
  consensus (ties, dare_ties, della, breadcrumbs_ties): TIES sign election (below); the others sum
  slerp             spherical interpolation from source 1 (t=0) to source 2 (t=1) per tensor
TIES sign election: W_i = w_i * sparse(d_i); the sign of sum_i W_i wins per element; mixed = sum of
the W_i with that sign; with normalize, divided by the sum of the w_i with that sign (0 -> 1);
times lambda; added to base. density >= 1 leaves d_i whole (no rescale), density <= 0 drops it.
Whole-tensor methods (nuslerp, multislerp, sce, model_stock, karcher, nearswap) run their kernel
(_kernels.py) on each tensor of the pool's own base and sources. Embeddings, norms and lm_head are
merged like any other tensor (same vocabulary).

Magnitude selections are mergekit's bit for bit: mergekit keeps a window of positions in
torch.argsort(|d|) (an unstable sort: which of several equal |d| it keeps depends on the sort), so
the merger sorts |d| the same way, once per (tensor, source) on the first trial that thins it, keeps
the permutation (int32, CPU memory), and per trial compares |d| against the window's two end values
and adds the window's share of the elements equal to them from the permutation.

Deviations, all below measurement: the Bernoulli keep-probability is quantized to 1/65536 (masks
come from 16-bit random integers: ~20x cheaper than torch.bernoulli on CPU); della's per-element
rank term is cached in float16; linear with weights summing to 0 divides by 1 (mergekit gives
inf/NaN). Arithmetic is float32 (float64 for float64 pools) on chunks of `chunk_elements`, so
half-precision pools are merged in float32 (their task vectors are stored in the pool dtype, as
mergekit's own half-precision merge has them; mergekit computes the kernels' methods in the pool
dtype, we in float32).

Randomness: each (tensor, source) mask is drawn from its own generator seeded from (seed, tensor
name, source name), so a trial is reproducible from its seed (on CPU the masks are even the same for
any chunk size; the rescaling sums then differ in rounding only).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from ._methods import MergeMethod, merge_method

TensorParams = Mapping[str, Mapping[str, Any]]
T = TypeVar("T")

_L1_EPS = 1e-7  # mergekit sparsify.rescaled_masked_tensor: no rescale when either L1 sum is below
_SLERP_DOT_THRESHOLD = 0.9995  # mergekit slerp: interpolate linearly when nearly collinear
_SLERP_NORM_EPS = 1e-8


def _seed_for(seed: int, tensor: str, source: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{tensor}/{source}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch seeds are < 2**63 on every device


class InMemoryMerger:
    """Merges the pool's sources into its live model, in place, once per `apply`.

    Resident on the pool's device (chunked engine): the base and one task vector per source (pool
    dtype), plus scratch for one chunk and, for sparsifying methods, one 0/1 keep mask per source
    for the largest tensor. Set-up a trial may never need is done on the first trial that needs it,
    once per (tensor, source): L1 sums for rescaling, della's ranks, and for magnitude selections
    (ties, breadcrumbs) the |d| sort permutation, in CPU memory (int32: one more copy of the task
    vectors' size). Kernel methods hold nothing: they read the pool's tensors per trial.
    chunk_elements: elements per step (multiple of 4); default 2**18 on CPU (the chunk's scratch
    stays in cache; fastest measured), 2**24 elsewhere.
    """

    def __init__(self, *, pool, method: MergeMethod | str, chunk_elements: int | None = None):
        self.method = merge_method(method) if isinstance(method, str) else method
        self.sources = pool.source_names
        exact = self.method.exact_sources
        if exact is not None and len(self.sources) != exact:
            raise ValueError(f"{self.method.name} merges exactly {exact} source models; the pool has "
                             f"{len(self.sources)}: {', '.join(self.sources)}")
        device = pool.device
        self.chunk = chunk_elements or (2**18 if device.type == "cpu" else 2**24)
        if self.chunk <= 0 or self.chunk % 4:
            raise ValueError(f"chunk_elements must be a positive multiple of 4; got {self.chunk}")
        self.names = pool.param_names
        live = pool.live_params()
        self._out = {k: live[k].data.view(-1) for k in self.names}
        self._compute = torch.float64 if pool.dtype == torch.float64 else torch.float32
        self._staged = pool.dtype != self._compute  # half pools: compute in float32, then cast
        self._device = device
        if self.method.combine == "kernel":
            self._pool = pool
            return
        n_src, max_numel = len(self.sources), max(t.numel() for t in pool.base.values())
        chunk = min(self.chunk, max_numel + (-max_numel) % 4)

        with torch.no_grad():
            self._base = {k: pool.base[k].to(device).view(-1) for k in self.names}
            self._deltas = [{k: (pool.sources[s][k].to(device).view(-1) - self._base[k]) for k in self.names}
                            for s in self.sources]
            if self.method.combine == "slerp":
                self._dot = {k: _slerp_dot(self._base[k], self._deltas[0][k], self._deltas[1][k]) for k in self.names}
        self._shapes = {k: pool.base[k].shape for k in self.names}
        # lazily computed, per (source index, tensor): see _once
        self._l1: dict[tuple[int, str], float] = {}
        self._rank: dict[tuple[int, str], torch.Tensor] = {}
        self._order: dict[tuple[int, str], torch.Tensor] = {}

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
        if self.method.sparsify in ("magnitude", "outliers"):
            self._below = buf(chunk, dtype=torch.bool)  # a window's upper cut
        if self.method.sparsify in ("random", "della"):
            self._bits = buf(chunk // 4, dtype=torch.int64)
            self._gens = [torch.Generator(device=device) for _ in self.sources]

    # ---------------------------------------------------------------- public
    def apply(self, tensor_params: TensorParams, *, seed: int = 0) -> None:
        """Overwrite every live parameter with the merge given by `tensor_params` (see module doc)."""
        self.check(tensor_params)
        with torch.no_grad():
            for k in self.names:
                p = tensor_params[k]
                if self.method.combine == "kernel":
                    self._run_kernel(k, p)
                elif self.method.consensus:
                    self._elect(k, p, seed)
                elif self.method.sparsify:
                    self._axpy(k, *self._sparse_coefficients(k, p, seed))
                else:
                    self._axpy(k, *self._coefficients(k, p))

    def check(self, tensor_params: TensorParams) -> None:
        """One-line errors for missing/extra tensors or parameters and values the method rejects."""
        if set(tensor_params) != set(self.names):
            missing = sorted(set(self.names) - set(tensor_params))
            extra = sorted(set(tensor_params) - set(self.names))
            raise ValueError(f"tensor params must cover exactly the model's {len(self.names)} parameters; "
                             f"missing {missing[:3]}, unknown {extra[:3]}")
        method = self.method
        for k in self.names:
            p = tensor_params[k]
            if set(p) != set(method.searched):
                raise ValueError(f"tensor {k}: {method.name} needs {sorted(method.searched)}; got {sorted(p)}")
            for param in method.params:
                if param.per_source and set(p[param.name]) != set(self.sources):
                    raise ValueError(f"tensor {k}: {param.name} must give one value per source "
                                     f"{list(self.sources)}; got {sorted(p[param.name])}")
                if param.check_value is None:
                    continue
                values = p[param.name].items() if param.per_source else [(None, p[param.name])]
                for src, value in values:
                    problem = param.check_value(value, method.options)
                    if problem:
                        of = f" of {src}" if src is not None else ""
                        raise ValueError(f"tensor {k}: {method.name} {param.name} {value}{of} {problem}")

    # ---------------------------------------------------------------- whole-tensor kernels
    def _run_kernel(self, k: str, p: Mapping[str, Any]) -> None:
        def load(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=self._device, dtype=self._compute)

        values = {name: [p[name][s] for s in self.sources] if name in self.method.per_source else p[name]
                  for name in self.method.searched}
        merged = self.method.kernel(load(self._pool.base[k]), [load(self._pool.sources[s][k]) for s in self.sources],
                                    values, self.method.options)
        assert merged.shape == self._pool.base[k].shape, (k, merged.shape)
        self._out[k].copy_(merged.view(-1))

    # ---------------------------------------------------------------- deterministic: c0*base + sum c_i d_i
    def _coefficients(self, k: str, p: Mapping[str, Any]) -> tuple[float, list[float]]:
        combine, opts = self.method.combine, self.method.options
        if combine == "slerp":
            c_a, c_b = _slerp_coefficients(p["t"], self._dot[k])
            return c_a + c_b, [c_a, c_b]
        w = [float(p["weight"][s]) for s in self.sources]
        div = self._divisor(w)
        if combine == "linear":  # the sources themselves: sum w_i (base + d_i) / div
            return sum(w) / div, [wi / div for wi in w]
        return 1.0, [opts["lambda"] * wi / div for wi in w]

    def _divisor(self, weights: list[float]) -> float:
        """The sum of the weights if normalizing (mergekit: a sum below 1e-8 divides by 1), else 1."""
        total = sum(weights)
        return total if self.method.options["normalize"] and abs(total) >= 1e-8 else 1.0

    def _axpy(self, k: str, c0: float, coefs: list[float], masked: list[bool] | None = None) -> None:
        base, out = self._base[k], self._out[k]
        for lo in range(0, base.numel(), self.chunk):
            hi = min(lo + self.chunk, base.numel())
            o = self._o[: hi - lo] if self._staged else out[lo:hi]
            o.copy_(base[lo:hi])
            if c0 != 1.0:
                o.mul_(c0)
            for i, (delta, c) in enumerate(zip(self._deltas, coefs)):
                if c == 0.0:
                    continue
                if masked and masked[i]:
                    o.addcmul_(delta[k][lo:hi], self._keeps[i, lo:hi], value=c)
                else:
                    o.add_(delta[k][lo:hi], alpha=c)
            if self._staged:
                out[lo:hi].copy_(o)

    # ---------------------------------------------------------------- sparsify (+ TIES election)
    # (bool tensors are slow on CPU: masks are 0/1 floats, signs are float arithmetic)
    def _sparsify(self, k: str, p: Mapping[str, Any], seed: int) -> tuple[list[float], list[float], list[bool]]:
        """Fill the keep masks of the sources thinned in tensor k; (weights, their rescaled
        coefficients, which sources are masked)."""
        rescale = self.method.options["rescale"]
        weights = [float(p["weight"][s]) for s in self.sources]
        densities = [float(p["density"][s]) for s in self.sources]
        masked = [0 < d < 1 for d in densities]
        coef = [w if d > 0 else 0.0 for w, d in zip(weights, densities)]
        for i in (i for i, m in enumerate(masked) if m):
            kept = self._keep_mask(k, i, densities[i], seed)
            if rescale:
                before = self._once(self._l1, i, k, lambda: self._deltas[i][k].abs().sum().item())
                if before >= _L1_EPS and kept >= _L1_EPS:
                    coef[i] *= before / kept
        return weights, coef, masked

    def _sparse_coefficients(self, k: str, p: Mapping[str, Any], seed: int) -> tuple[float, list[float], list[bool]]:
        weights, coef, masked = self._sparsify(k, p, seed)
        div = self._divisor(weights)
        return 1.0, [self.method.options["lambda"] * c / div for c in coef], masked

    def _elect(self, k: str, p: Mapping[str, Any], seed: int) -> None:
        opts, n = self.method.options, self._base[k].numel()
        weights, coef, masked = self._sparsify(k, p, seed)
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

    def _once(self, cache: dict[tuple[int, str], T], i: int, k: str, compute: Callable[[], T]) -> T:
        """cache[(i, k)], computed on first use: set-up only the trials that need it pay for."""
        if (i, k) not in cache:
            cache[(i, k)] = compute()
        return cache[(i, k)]

    def _keep_mask(self, k: str, i: int, density: float, seed: int) -> float:
        """Fill self._keeps[i] (1.0 = kept) for tensor k; return the kept L1 mass (0.0 unless rescaling)."""
        n = self._base[k].numel()
        if self.method.sparsify == "magnitude":  # mergekit sparsify.magnitude
            return self._keep_window(k, i, descending=True, start=0, stop=max(1, int(density * n)))
        if self.method.sparsify == "outliers":  # mergekit sparsify.magnitude_outliers
            target, top = int(density * n), int(self.method.options["gamma"] * n)
            start = max(0, n - target - top)
            return self._keep_window(k, i, descending=False, start=start, stop=start + target)
        delta, keep = self._deltas[i][k], self._keeps[i, :n]
        rescale = self.method.options["rescale"]
        gen = self._gens[i]
        gen.manual_seed(_seed_for(seed, k, self.sources[i]))
        kept = torch.zeros((), dtype=torch.float64, device=keep.device)
        eps = self.method.options.get("epsilon", 0.0)
        if self.method.sparsify == "della":
            rank = self._once(self._rank, i, k, lambda: _row_rank(self._shapes[k], delta))
        for lo in range(0, n, self.chunk):
            hi = min(lo + self.chunk, n)
            bits = self._bits[: (hi - lo + 3) // 4].random_(-(2**63), None, generator=gen)
            draws = bits.view(torch.int16)[: hi - lo]  # uniform on [-32768, 32767]
            if self.method.sparsify == "random":
                threshold = round(density * 65536) - 32768  # P(draw < threshold) = density
            else:  # della: keep-probability (density - eps) + rank * 2 eps, rank in [0, 1] per row
                threshold = self._scratch[: hi - lo].copy_(rank[lo:hi])
                threshold.mul_(2 * eps * 65536).add_((density - eps) * 65536 - 32768)
            torch.lt(draws, threshold, out=keep[lo:hi])
            if rescale:
                mags = _abs(delta[lo:hi], out=self._scratch[: hi - lo])
                kept += _kept_mass(mags, keep[lo:hi])
        return kept.item()

    def _keep_window(self, k: str, i: int, *, descending: bool, start: int, stop: int) -> float:
        """Keep the elements at positions [start, stop) of torch.argsort(|d|, descending), as mergekit.

        Elements strictly between the window's end values are kept by comparison; an end that is
        not the tensor's extreme also needs its share of the elements equal to its value, which is
        the sort's choice: those are read from the permutation (usually one element).
        """
        n = self._base[k].numel()
        delta, keep = self._deltas[i][k], self._keeps[i, :n]
        if start >= stop:
            keep.zero_()
            return 0.0
        order = self._once(self._order, i, k, lambda: _magnitude_order(delta, descending, self._compute))

        def key(pos: int) -> float:  # |d| at a sorted position (exact: a float64 holds any pool dtype)
            return abs(delta[int(order[pos])].item())

        first, last = key(start), key(stop - 1)
        start_cut, stop_cut = start > 0, stop < n
        low, high = (last, first) if descending else (first, last)
        low_cut, high_cut = (stop_cut, start_cut) if descending else (start_cut, stop_cut)
        rescale = self.method.options["rescale"]
        kept = torch.zeros((), dtype=torch.float64, device=keep.device)
        for lo in range(0, n, self.chunk):
            hi = min(lo + self.chunk, n)
            mags = _abs(delta[lo:hi], out=self._scratch[: hi - lo])
            if low_cut:
                torch.gt(mags, low, out=keep[lo:hi])
            if high_cut:
                below = torch.lt(mags, high, out=self._below[: hi - lo])
                if low_cut:
                    keep[lo:hi].mul_(below)
                else:
                    keep[lo:hi].copy_(below)
            if not (low_cut or high_cut):
                keep[lo:hi].fill_(1)
            if rescale:
                kept += _kept_mass(mags, keep[lo:hi])
        # the window's share of the elements equal to a cut end value: a run of positions at that end
        runs = []
        if start_cut:
            runs.append((start, _run_edge(start, stop, lambda pos: key(pos) == first)))
        if stop_cut and not (start_cut and first == last):  # equal ends: the one run is the window
            runs.append((_run_edge(stop - 1, start - 1, lambda pos: key(pos) == last) + 1, stop))
        for a, b in runs:
            picked = order[a:b].to(device=keep.device, dtype=torch.int64)
            keep[picked] = 1
            if rescale:
                kept += delta[picked].to(torch.float64).abs().sum()
        return kept.item()


def _run_edge(anchor: int, limit: int, same: Callable[[int], bool]) -> int:
    """Walking from `anchor` (where `same` holds) towards `limit` (exclusive, on either side): the
    first position where `same` fails, else `limit`. Gallops first: runs are mostly one long."""
    step = 1 if limit > anchor else -1
    good, stride = anchor, 1
    while True:
        probe = good + step * stride
        if (probe - limit) * step >= 0:
            bad = limit
            break
        if not same(probe):
            bad = probe
            break
        good, stride = probe, stride * 2
    while abs(bad - good) > 1:  # same(good), not same(bad) (or bad is the limit)
        mid = (good + bad) // 2
        good, bad = (mid, bad) if same(mid) else (good, mid)
    return bad


def _magnitude_order(delta: torch.Tensor, descending: bool, dtype: torch.dtype) -> torch.Tensor:
    """torch.argsort(|d|) as mergekit's sparsify calls it, as int32 on CPU. |d| is in the compute
    dtype: float32, as mergekit's on CPU; for float64 pools float64, where mergekit ranks |d|
    rounded to float32 (the picks differ only among |d| that round to the same float32)."""
    assert delta.numel() < 2**31, "int32 positions"
    return torch.argsort(delta.abs().to(dtype), descending=descending).to(torch.int32).cpu()


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
    return slerp_cosine(base.double() + d_a.double(), base.double() + d_b.double())


def slerp_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Cosine between two whole tensors as mergekit's slerp computes it (float64; a norm below 1e-8
    is taken as 1), clamped to [-1, 1]. Also evo_breed's crossover."""
    x, y = x.double().reshape(-1), y.double().reshape(-1)
    nx, ny = x.norm().item(), y.norm().item()
    nx, ny = (nx if nx > _SLERP_NORM_EPS else 1.0), (ny if ny > _SLERP_NORM_EPS else 1.0)
    return max(-1.0, min(1.0, torch.dot(x / nx, y / ny).item()))


def slerp_coefficients(t: float, dot: float) -> tuple[float, float]:
    """mergekit's slerp: (c_a, c_b) with result c_a a + c_b b for cosine `dot`; linear when nearly collinear."""
    return _slerp_coefficients(t, dot)


def _slerp_coefficients(t: float, dot: float) -> tuple[float, float]:
    if abs(dot) > _SLERP_DOT_THRESHOLD:
        return 1.0 - t, t
    theta = math.acos(dot)
    return math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)
