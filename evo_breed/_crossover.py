"""M2N2's crossover for whole models: SLERP at a split point over the ordered parameter list.

    child = split_slerp(parent_a, parent_b, names, split=5, w=0.3)

Tensors names[:split] are SLERPed from parent a towards parent b by w, the rest by 1 - w (w = 0
is parent a before the split and parent b after it). SLERP runs per tensor with evo_ps's slerp math
(mergekit's: the angle between the two whole tensors, linear when nearly collinear), where the
released M2N2 code takes one angle over its flat MLP vector. Optional Gaussian mutation adds
`mutation_std` times each tensor's RMS times N(0, 1), drawn from `seed`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from evo_ps import slerp_coefficients, slerp_cosine


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
