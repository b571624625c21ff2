"""The merge methods: one declarative `MERGE_METHODS` entry each (mergekit 0.1.5's names and defaults).

    method = merge_method("della", {"epsilon": 0.1})    # MERGE_METHODS.get("della") with an option set
    method.params                                       # what a search picks per tensor group
    method.options                                      # fixed settings (mergekit's names and defaults)

A method declares what it searches (`Param`: per source or shared, its default search bounds and
the rules its bounds and per-trial values obey), its options (defaults + the rules they obey), and
how it is computed: by `InMemoryMerger`'s chunked engine (combine "linear", "task_arithmetic" with
an optional sparsification and TIES sign election, "slerp"), or by a whole-tensor `kernel` (see
_kernels.py). Adding a method is one `_declare(MergeMethod(...))` below, plus a kernel if it needs
new math. docs/merge-methods.md tabulates them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from evo_core import Registry

from . import _kernels

Options = Mapping[str, Any]
Rule = Callable[..., "str | None"]  # what is wrong (ends the error message), or None


@dataclass(frozen=True)
class Param:
    """One searched merge parameter.

    per_source: one value per source model (weight, density), else one for all (slerp's t);
    bounds: default search bounds, or a function of the options giving them;
    check_bounds(low, high, options): a phrase the bounds violate, or None;
    check_value(value, options): the same for one trial's value, where bounds are not enough.
    """

    name: str
    per_source: bool
    bounds: tuple[float, float] | Callable[[Options], tuple[float, float]] = (0.0, 1.0)
    check_bounds: Rule | None = None
    check_value: Rule | None = None

    def default_bounds(self, options: Options) -> tuple[float, float]:
        return self.bounds(options) if callable(self.bounds) else self.bounds


@dataclass(frozen=True)
class MergeMethod:
    """One merge method, declared by what it searches and how it is computed.

    params: the searched parameters; options: fixed (not searched) settings with mergekit's
    defaults, `option_rules` {option: (predicate, requirement)} for those with a valid range;
    combine: "linear" | "task_arithmetic" | "slerp" (chunked engine) | "kernel" (`kernel`);
    sparsify: how each task vector is thinned (None, magnitude, outliers, random, della);
    consensus: TIES sign election; exact_sources: the number of source models it merges, if fixed;
    mergekit_base: what mergekit's base_model is ("base", "first_source" or None: no base input).
    """

    name: str
    combine: str
    params: tuple[Param, ...] = ()
    options: Options = field(default_factory=dict)
    option_rules: Mapping[str, tuple[Callable[[Any], bool], str]] = field(default_factory=dict)
    sparsify: str | None = None
    consensus: bool = False
    kernel: Callable | None = None
    exact_sources: int | None = None
    mergekit_base: str | None = "base"

    def __post_init__(self):
        assert self.combine in ("linear", "slerp", "task_arithmetic", "kernel"), self.combine
        assert (self.combine == "kernel") == (self.kernel is not None), self.name
        assert self.sparsify in (None, "magnitude", "outliers", "random", "della"), self.sparsify
        assert not self.sparsify or (self.combine == "task_arithmetic" and "density" in self.per_source), self.name
        assert not self.consensus or self.combine == "task_arithmetic", self.name
        assert set(self.option_rules) <= set(self.options), self.name
        assert self.mergekit_base in ("base", "first_source", None), self.mergekit_base

    @property
    def per_source(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if p.per_source)

    @property
    def shared(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if not p.per_source)

    @property
    def searched(self) -> tuple[str, ...]:
        return self.per_source + self.shared

    def with_options(self, options: Options | None) -> MergeMethod:
        """A copy with some options overridden; unknown options fail listing the known ones."""
        unknown = set(options or {}) - set(self.options)
        if unknown:
            raise ValueError(f"merge method {self.name!r} has no option {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(self.options) or 'none'}")
        merged = {**self.options, **(options or {})}
        for key, value in merged.items():
            default = self.options[key]
            if type(value) is not type(default) and not (
                    isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)):
                raise ValueError(f"merge option {key!r} must be a {type(default).__name__}; got {value!r}")
            if key in self.option_rules and not self.option_rules[key][0](value):
                raise ValueError(f"{self.name} option {key} must be {self.option_rules[key][1]}; got {value}")
        return replace(self, options={k: float(v) if isinstance(self.options[k], float) else v
                                      for k, v in merged.items()})


MERGE_METHODS: Registry[MergeMethod] = Registry("merge method")


def merge_method(name: str, options: Options | None = None) -> MergeMethod:
    """The registered method `name` with `options` (mergekit's names, e.g. normalize, rescale,
    lambda, epsilon) overriding its defaults."""
    return MERGE_METHODS.get(name).with_options(options)


def _declare(method: MergeMethod) -> None:
    MERGE_METHODS.register(method.name, method)


# ---------------------------------------------------------------- parameter kinds
def _in_unit(low: float, high: float, options: Options) -> str | None:
    return None if 0 <= low < high <= 1 else "must lie in [0, 1]"


def _fraction(name: str, *, per_source: bool) -> Param:
    """A share or interpolation point: searched in [0, 1], and bounds must stay there."""
    return Param(name, per_source=per_source, check_bounds=_in_unit)


_DELLA_MARGIN = 1e-3  # default della density bounds stay this far inside (epsilon, 1 - epsilon)


def _della_bounds(options: Options) -> tuple[float, float]:
    return options["epsilon"] + _DELLA_MARGIN, 1 - options["epsilon"] - _DELLA_MARGIN


def _della_check_bounds(low: float, high: float, options: Options) -> str | None:
    eps = options["epsilon"]
    return None if eps < low < high < 1 - eps else f"must lie inside (epsilon, 1 - epsilon) = ({eps}, {1 - eps})"


def _della_check_value(density: float, options: Options) -> str | None:
    # mergekit's della_magprune: a density strictly inside (0, 1) must keep density +- epsilon there
    eps = options["epsilon"]
    if 0 < density < 1 and not (density - eps > 0 and density + eps < 1):
        return f"+- epsilon {eps} must stay in (0, 1)"
    return None


def _non_negative(low: float, high: float, options: Options) -> str | None:
    return None if 0 <= low < high else "must be >= 0"


WEIGHT = Param("weight", per_source=True)  # any finite bounds: negative weights subtract a task
DENSITY = _fraction("density", per_source=True)
DELLA_DENSITY = Param("density", per_source=True, bounds=_della_bounds, check_bounds=_della_check_bounds,
                      check_value=_della_check_value)
_GTA = (WEIGHT, DENSITY)
_EPSILON_RULE = {"epsilon": (lambda e: 0 < e < 0.5, "in (0, 0.5)")}
_GAMMA_RULE = {"gamma": (lambda g: 0 <= g < 1, "in [0, 1)")}


def _gta_options(*, normalize: bool, rescale: bool | None = None, **extra: float) -> dict[str, Any]:
    """mergekit's generalized task arithmetic options (rescale only where something is sparsified)."""
    return {"normalize": normalize, **({} if rescale is None else {"rescale": rescale}), "lambda": 1.0, **extra}


# ---------------------------------------------------------------- the methods (mergekit 0.1.5 defaults)
_declare(MergeMethod(name="linear", combine="linear", params=(WEIGHT,), options={"normalize": True},
                     mergekit_base=None))
_declare(MergeMethod(name="task_arithmetic", combine="task_arithmetic", params=(WEIGHT,),
                     options=_gta_options(normalize=False)))
_declare(MergeMethod(name="ties", combine="task_arithmetic", params=_GTA, sparsify="magnitude", consensus=True,
                     options=_gta_options(normalize=True, rescale=False)))
_declare(MergeMethod(name="dare_ties", combine="task_arithmetic", params=_GTA, sparsify="random", consensus=True,
                     options=_gta_options(normalize=False, rescale=True)))
_declare(MergeMethod(name="dare_linear", combine="task_arithmetic", params=_GTA, sparsify="random",
                     options=_gta_options(normalize=False, rescale=True)))
_declare(MergeMethod(name="della", combine="task_arithmetic", params=(WEIGHT, DELLA_DENSITY), sparsify="della",
                     consensus=True, options=_gta_options(normalize=True, rescale=True, epsilon=0.15),
                     option_rules=_EPSILON_RULE))
_declare(MergeMethod(name="della_linear", combine="task_arithmetic", params=(WEIGHT, DELLA_DENSITY),
                     sparsify="della", options=_gta_options(normalize=False, rescale=True, epsilon=0.15),
                     option_rules=_EPSILON_RULE))
_declare(MergeMethod(name="breadcrumbs", combine="task_arithmetic", params=_GTA, sparsify="outliers",
                     options=_gta_options(normalize=False, rescale=False, gamma=0.01), option_rules=_GAMMA_RULE))
_declare(MergeMethod(name="breadcrumbs_ties", combine="task_arithmetic", params=_GTA, sparsify="outliers",
                     consensus=True, options=_gta_options(normalize=False, rescale=False, gamma=0.01),
                     option_rules=_GAMMA_RULE))
_declare(MergeMethod(name="slerp", combine="slerp", params=(_fraction("t", per_source=False),), exact_sources=2,
                     mergekit_base="first_source"))
_declare(MergeMethod(name="nuslerp", combine="kernel", kernel=_kernels.nuslerp, params=(WEIGHT,), exact_sources=2,
                     options={"nuslerp_row_wise": False, "nuslerp_flatten": True}))
_declare(MergeMethod(name="multislerp", combine="kernel", kernel=_kernels.multislerp, params=(WEIGHT,),
                     options={"normalize_weights": True, "eps": 1e-8},
                     option_rules={"eps": (lambda e: e > 0, "> 0")}))
_declare(MergeMethod(name="sce", combine="kernel", kernel=_kernels.sce,
                     params=(_fraction("select_topk", per_source=False),)))
_declare(MergeMethod(name="model_stock", combine="kernel", kernel=_kernels.model_stock,
                     options={"filter_wise": False}))
_declare(MergeMethod(name="karcher", combine="kernel", kernel=_kernels.karcher, mergekit_base=None,
                     options={"max_iter": 10, "tol": 1e-5},
                     option_rules={"max_iter": (lambda n: n >= 1, ">= 1"), "tol": (lambda t: t > 0, "> 0")}))
# nearswap's t is a distance in weight units (|a - b| below t is swapped in fully): fine-tunes'
# weight deltas are ~1e-4..1e-3, mergekit's example uses t = 1e-4
_declare(MergeMethod(name="nearswap", combine="kernel", kernel=_kernels.nearswap, exact_sources=2,
                     params=(Param("t", per_source=False, bounds=(0.0, 1e-3), check_bounds=_non_negative),),
                     mergekit_base="first_source"))
