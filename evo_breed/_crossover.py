"""The crossovers for whole models: M2N2's split-point SLERP, and gen781's DELLA.

    child = split_slerp(parent_a, parent_b, names, split=5, w=0.3)
    draw = draw_della(ranges, rng)       # {"weight": [a, b], "density": [a, b], "epsilon": e, "lambda": l}
    child = della_crossover(pool, parent_a, parent_b, draw, seed=7)

Tensors names[:split] are SLERPed from parent a towards parent b by w, the rest by 1 - w (w = 0
is parent a before the split and parent b after it). SLERP runs per tensor with evo_ps's slerp math
(mergekit's: the angle between the two whole tensors, linear when nearly collinear), where the
released M2N2 code takes one angle over its flat MLP vector. Optional Gaussian mutation adds
`mutation_std` times each tensor's RMS times N(0, 1), drawn from `seed`.

DELLA takes the two parents' task vectors against the pool's base (parent - base) and merges them
as evo_ps's `della` method computes it (mergekit's della: per-row magnitude-ranked drop with keep
probability density +- epsilon, rescaled, TIES sign election, normalized by the weights, times
lambda, added to the base); its weights, densities, epsilon and lambda are drawn per child from the
declared ranges (`crossover.della`). The masks are seeded by `seed` (the trial), so a child killed
before its offer is made again exactly. It needs parents that are fine-tunes of the base
(`check_common_base`): otherwise parent - base is no task vector.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from evo_ps import InMemoryMerger, merge_method, slerp_coefficients, slerp_cosine

# a source farther than this from the base (relative L2 over all tensors) is no fine-tune of it:
# the zoo's experts are 0.14-0.18 away, a freshly initialised model of the same shape 0.92
COMMON_BASE_DISTANCE = 0.5


def split_index(split: float, n: int) -> int:
    """A draw in [0, 1) -> a split point in 0..n-1 (uniform over the tensors, as randint(0, n))."""
    return min(int(split * n), n - 1)


@torch.no_grad()
def split_slerp(parent_a: Mapping[str, torch.Tensor], parent_b: Mapping[str, torch.Tensor], names: Sequence[str], *,
                split: int, w: float, mutation_std: float = 0.0, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed) if mutation_std > 0 else None
    child = {}
    for i, name in enumerate(names):
        a, b = parent_a[name], parent_b[name]
        t = w if i < split else 1.0 - w
        c_a, c_b = slerp_coefficients(t, slerp_cosine(a, b))
        merged = (c_a * a.float() + c_b * b.float())
        if gen is not None:
            rms = merged.pow(2).mean().sqrt()
            merged += mutation_std * rms * torch.randn(merged.shape, generator=gen)
        child[name] = merged.to(a.dtype)
    return child


def draw_della(ranges: Any, rng: np.random.Generator) -> dict[str, Any]:
    """One child's DELLA parameters, each uniform in its [low, high] (`crossover.della`): a weight
    and a density per parent, one epsilon and lambda."""
    def uniform(r: Sequence[float]) -> float:
        return float(r[0] + rng.random() * (r[1] - r[0]))

    return {"weight": [uniform(ranges.weight), uniform(ranges.weight)],
            "density": [uniform(ranges.density), uniform(ranges.density)],
            "epsilon": uniform(ranges.epsilon), "lambda": uniform(ranges.lambda_)}


PARENTS = ("parent_a", "parent_b")  # the two sources' names in the merge (they seed the masks)


@torch.no_grad()
def della_crossover(pool: Any, parent_a: Mapping[str, torch.Tensor], parent_b: Mapping[str, torch.Tensor],
                    draw: Mapping[str, Any], *, seed: int) -> dict[str, torch.Tensor]:
    """DELLA of the two parents' task vectors against `pool.base`, computed by evo_ps's merger in
    the pool's live model (overwritten) and returned as a copy."""
    parents = dataclasses.replace(pool, sources=dict(zip(PARENTS, (parent_a, parent_b))))
    method = merge_method("della", {"epsilon": float(draw["epsilon"]), "lambda": float(draw["lambda"])})
    per_tensor = {"weight": dict(zip(PARENTS, map(float, draw["weight"]))),
                  "density": dict(zip(PARENTS, map(float, draw["density"])))}
    InMemoryMerger(pool=parents, method=method).apply({name: per_tensor for name in pool.param_names}, seed=seed)
    return {name: t.detach().clone() for name, t in pool.live_params().items()}


def check_common_base(base: Mapping[str, torch.Tensor], sources: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """One line if a source is no fine-tune of the base: its distance from the base, relative to the
    base's norm over all tensors, above COMMON_BASE_DISTANCE."""
    norm = sum(float(t.double().pow(2).sum()) for t in base.values()) ** 0.5
    for name, weights in sources.items():
        distance = sum(float((weights[k].double() - base[k].double()).pow(2).sum()) for k in base) ** 0.5 / norm
        if distance > COMMON_BASE_DISTANCE:
            raise ValueError(f"crossover DELLA takes task vectors against pool.base, but source {name!r} is no "
                             f"fine-tune of it (distance {distance:.2f} of the base's norm, > {COMMON_BASE_DISTANCE}): "
                             f"use sources fine-tuned from one base, or crossover.method=slerp")
