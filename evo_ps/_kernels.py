"""Whole-tensor merge kernels: mergekit 0.1.5's math for methods outside the chunked engine.

    kernel(base, sources, params, options) -> merged tensor

base and sources: one tensor each, full shape, float32 (float64 for float64 pools); params: the
tensor's searched values, per-source ones as lists in source order ({"weight": [0.7, 0.4]}),
shared ones as numbers ({"t": 0.3}); options: the method's fixed settings. A kernel never writes
into its inputs (they may be the pool's own tensors). Each follows mergekit's operation order
(merge_methods/<name>.py), so on CPU it gives mergekit's float32 result to the last bit or ulp.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

Tensor = torch.Tensor


def model_stock(base: Tensor, sources: Sequence[Tensor], params: Mapping[str, Any],
                options: Mapping[str, Any]) -> Tensor:
    """Model Stock: interpolate base -> the sources' mean by t = N cos / (1 + (N - 1) cos), where cos
    is the mean pairwise cosine of the task vectors (whole tensor, or per row with filter_wise)."""
    w_0, ws = base, list(sources)
    if options["filter_wise"]:
        if w_0.dim() == 1:
            w_0, ws = w_0.unsqueeze(0), [w.unsqueeze(0) for w in ws]
    else:
        w_0, ws = w_0.reshape(-1), [w.reshape(-1) for w in ws]
    offsets = [w - w_0 for w in ws]
    cos_thetas = []
    for i, offset_a in enumerate(offsets):
        for offset_b in offsets[i + 1:]:
            norm_product = torch.norm(offset_a, dim=-1) * torch.norm(offset_b, dim=-1)
            cos_thetas.append(((offset_a * offset_b).sum(dim=-1) / norm_product.clamp(min=1e-6)).clamp(-1, 1))
    cos_theta = torch.stack(cos_thetas).mean(dim=0).unsqueeze(-1)
    count = len(ws)
    denominator = 1 + (count - 1) * cos_theta
    singular = denominator.abs() < 1e-6  # no finite estimate: keep the base
    t = torch.where(singular, torch.zeros_like(cos_theta),
                    count * cos_theta / torch.where(singular, torch.ones_like(denominator), denominator))
    average = sum(ws) / count
    return (t * average + (1 - t) * w_0).reshape(base.shape)


def _nuslerp(t: float, v0: Tensor, v1: Tensor, *, dim: int, flatten: bool, eps: float = 1e-8) -> Tensor:
    def unit(x: Tensor) -> Tensor:
        return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=1e-7)

    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)
    cos_theta = torch.sum(unit(v0) * unit(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos_theta.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos_theta))
    result = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    result = torch.where(colinear, (1 - t) * v0 + t * v1, result)
    if dim != -1 and not flatten:
        result = result.transpose(dim, -1)
    return result.reshape(shape)


def nuslerp(base: Tensor, sources: Sequence[Tensor], params: Mapping[str, Any],
            options: Mapping[str, Any]) -> Tensor:
    """NuSLERP of the two task vectors at t = w_2 / (w_1 + w_2) (0.5 if the weights cancel), added
    to the base; whole tensor (nuslerp_flatten), else per row (nuslerp_row_wise) or per column."""
    w = params["weight"]
    total = sum(w)
    t = 0.5 if abs(total) < 1e-6 else w[1] / total
    return base + _nuslerp(t, sources[0] - base, sources[1] - base,
                           dim=0 if options["nuslerp_row_wise"] else -1, flatten=options["nuslerp_flatten"])


def multislerp(base: Tensor, sources: Sequence[Tensor], params: Mapping[str, Any],
               options: Mapping[str, Any]) -> Tensor:
    """Weighted barycentric interpolation of the task vectors on the unit sphere (tangent space at
    their weighted mean, exponential map back), scaled by their weighted mean norm, plus the base."""
    eps = options["eps"]
    tensors = torch.stack(list(sources), dim=0)
    tensors -= base
    flat = tensors.view(tensors.shape[0], -1)
    weights = torch.tensor(params["weight"], dtype=tensors.dtype, device=tensors.device)
    if options["normalize_weights"]:
        weights = weights / weights.sum()
    norms = torch.norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * weights.view(-1, 1)).sum(0)
    mean_norm = torch.norm(mean)
    if mean_norm < eps:
        if tensors.shape[0] == 2:  # antipodal pair: mergekit falls back to linear interpolation
            return (tensors[0] * weights[0] + tensors[1] * weights[1]).view(base.shape) + base
        raise ValueError("multislerp: the weighted sum of the task vectors is zero (antipodal vectors "
                         "with balancing weights); choose other weights")
    mean = mean / mean_norm
    tangents = units - (units * mean).sum(-1, keepdim=True) * mean
    tangent = (tangents * weights.view(-1, 1)).sum(0)
    tangent_norm = torch.norm(tangent) + eps
    result = mean * torch.cos(tangent_norm) + tangent * (torch.sin(tangent_norm) / tangent_norm)
    result = result * (norms.squeeze(-1) * weights).sum()
    return result.view(base.shape) + base


def karcher(base: Tensor, sources: Sequence[Tensor], params: Mapping[str, Any],
            options: Mapping[str, Any]) -> Tensor:
    """The Karcher (Riemannian) mean of the sources' directions on the unit sphere, equal weights,
    scaled by their mean norm; the base is not an input (as in mergekit without a base_model)."""
    max_iter, tol = options["max_iter"], options["tol"]
    alphas = [1.0 / len(sources)] * len(sources)
    norms = [torch.linalg.vector_norm(t) for t in sources]
    units = [torch.zeros_like(t) if n.item() == 0.0 else t / n for t, n in zip(sources, norms)]
    valid = [i for i, n in enumerate(norms) if n.item() > tol]
    if not valid:
        return torch.zeros_like(base)
    alpha_sum = sum(alphas[i] for i in valid)
    valid_alphas = [alphas[i] / alpha_sum for i in valid]
    valid_units = [units[i] for i in valid]
    mean = torch.zeros_like(valid_units[0])
    for alpha, unit in zip(valid_alphas, valid_units):
        mean += alpha * unit
    mean_norm = torch.linalg.vector_norm(mean)
    mean = valid_units[0].clone() if mean_norm.item() < tol else mean / mean_norm
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for alpha, unit in zip(valid_alphas, valid_units):
            dot = torch.clamp(torch.dot(mean.flatten(), unit.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if theta.item() < tol:
                continue
            tangent += alpha * (theta / torch.sin(theta)) * (unit - dot * mean)
        tangent_norm = torch.linalg.vector_norm(tangent)
        if tangent_norm.item() < tol:
            break
        mean = torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)
        unit_norm = torch.linalg.vector_norm(mean)
        if unit_norm.item() > tol:
            mean = mean / unit_norm
    return sum(alpha * norm for alpha, norm in zip(alphas, norms)) * mean


def nearswap(base: Tensor, sources: Sequence[Tensor], params: Mapping[str, Any],
             options: Mapping[str, Any]) -> Tensor:
    """Per element, move the first source towards the second by min(1, t / |a - b|): elements that
    are already near (|a - b| <= t) are swapped in fully. The base is not an input."""
    a, b = sources
    weight = (params["t"] / torch.abs(a - b).clamp(min=1e-6)).clamp(min=0, max=1)
    return weight * b + (1 - weight) * a


def sce(base: Tensor, sources: Sequence[Tensor], params: Mapping[str, Any],
        options: Mapping[str, Any]) -> Tensor:
    """SCE: keep the select_topk share of elements with the largest variance across task vectors,
    elect signs as TIES, and weight each task vector by its mean square (no searched weights)."""
    task_vectors = torch.stack([s - base for s in sources], dim=0)
    if params["select_topk"] < 1:
        task_vectors = task_vectors * _sce_mask(task_vectors, params["select_topk"]).unsqueeze(0)
    sign = task_vectors.sign()
    majority = (task_vectors.sum(dim=0) >= 0).to(task_vectors.dtype) * 2 - 1
    erase = sign == majority
    weights = task_vectors.square().reshape(task_vectors.shape[0], -1).mean(dim=1)
    weight_sum = torch.sum(weights).item()
    weights = torch.ones_like(weights) / weights.shape[0] if abs(weight_sum) < 1e-6 else weights / weight_sum
    weights = weights.view(-1, *([1] * (task_vectors.dim() - 1)))
    erased = weights * erase
    return base + (task_vectors * erased).sum(dim=0) / torch.sum(erased, dim=0).clamp(min=1e-6)


def _sce_mask(task_vectors: Tensor, density: float) -> Tensor:
    """1 for the top int(density * nonzero) elements by variance across task vectors (torch.topk's
    picks among ties, as mergekit), else 0."""
    mask = torch.zeros_like(task_vectors[0])
    if density <= 0:
        return mask
    var = torch.var(task_vectors, dim=0, unbiased=False)
    k = int(torch.count_nonzero(var) * density)
    if k:
        mask.view(-1)[torch.topk(var.abs().view(-1), k=k, largest=True).indices] = 1
    return mask
