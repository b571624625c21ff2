"""The objective contract: what any fitness must give the study lifecycle.

    class Exact(Objective-like):                     # any class with these members
        metrics = (Metric("acc"),)                   # names; higher is better unless said
        default_fitness = "acc"
        def __init__(self, *, tokenizer, splits, **options): ...   # data read and checked here, once
        def split_names(self) -> list[str]: ...
        def score_items(self, model, split) -> dict[str, list[float]]: ...  # per metric, per item, in [0, 1]

    OBJECTIVES.register("exact", Exact)             # then `objective.name=exact` in a config
    objective = build_objective(cfg.objective, tokenizer)

The optional members, declared with their defaults by `ObjectiveDefaults` (subclass it, or not:
`build_objective` fills in what an objective lacks, `with_defaults`):
    n_items(split) -> int | None       # None (default): no subsets. A count promises
                                       # score_items(model, split, items=indices), scores in that
                                       # order: what evaluation.kind=racing needs
    aggregate(item_scores) -> dict     # a whole split's metrics plus "n" (default: mean_scores)
    last_work: Mapping[str, int]       # what the last score_items spent, logged per trial ({})
    likelihood_items(model, split, items=None) -> list[float]   # None (default): no likelihood
                                       # fidelity. Per item, the mean log-probability per token of
                                       # its reference answer(s), prefill only: evaluation.cheap=likelihood
    write_samples(split, out_dir, *, n=24) -> list[Path]   # the last outputs, as artifacts (none)

An objective's own settings (a generative one's prompt template, generation settings, ...) are
keyword options of its constructor, `objective.options` in a config, checked by name here.

An item is whatever the objective's data holds (text, images, reference lists); the lifecycle never
looks inside. A metric's value is the mean of its per-item scores, so graded scores (ROUGE-L) and
exact matches (0/1) aggregate alike, and the per-item scores are kept on every trial (the study's
`item_scores` user attribute) for cheaper-fitness schemes and population breeding. An objective
may report a whole split otherwise (a full-evaluation trial's values, the test table), e.g. by the
bootstrap estimate a paper used, through `aggregate`; a race's blocks are
always averaged. Nothing here imports an objective: implementations register themselves (the
`objectives` package does so on import).
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from ._registry import Registry


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool = True


@runtime_checkable
class Objective(Protocol):
    """The required members. The optional ones (ObjectiveDefaults) are supplied by
    `with_defaults` when an objective lacks them."""

    metrics: Sequence[Metric]
    default_fitness: str

    def split_names(self) -> list[str]: ...

    def score_items(self, model: Any, split: str) -> dict[str, list[float]]: ...


class ObjectiveDefaults:
    """The optional members of the contract, with their defaults. An objective may subclass this
    (and override what it has), or not: `build_objective` gives the lifecycle `with_defaults` of
    it, so the lifecycle calls every member without asking whether it is there."""

    # what the last score_items spent (items, generated tokens, ...), logged with each trial
    last_work: Mapping[str, int] = MappingProxyType({})

    # likelihood_items(model, split, items=None) -> list[float]: per item, the mean log-probability
    # per token of its reference answer(s), teacher-forced (prefill only), what
    # evaluation.cheap=likelihood screens with; None: this objective has no such fidelity
    likelihood_items = None

    def n_items(self, split: str) -> int | None:
        """A split's item count; None: this objective cannot score a subset of a split. An objective
        that gives a count promises `score_items(model, split, items=)` (what racing needs)."""
        return None

    def aggregate(self, item_scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
        """A whole split's metrics from its per-item scores, plus n: by default their means."""
        return mean_scores(item_scores)

    def write_samples(self, split: str, out_dir: str | Path, *, n: int = 24) -> list[Path]:
        """Files showing the last scored outputs of `split` (logged as artifacts); by default none."""
        return []


OPTIONAL_MEMBERS = ("last_work", "n_items", "aggregate", "write_samples", "likelihood_items")
_DEFAULTS = ObjectiveDefaults()


class _WithDefaults:
    """An objective with only the required members, and the defaults of the optional ones."""

    def __init__(self, objective: Any):
        self.objective = objective

    def __getattr__(self, name: str) -> Any:  # only for names this wrapper does not have itself
        if name in OPTIONAL_MEMBERS and not hasattr(self.objective, name):
            return getattr(_DEFAULTS, name)
        return getattr(self.objective, name)


def with_defaults(objective: Any) -> Any:
    """`objective`, with the defaults of the optional members it does not define (ObjectiveDefaults)."""
    if isinstance(objective, ObjectiveDefaults) or all(hasattr(objective, m) for m in OPTIONAL_MEMBERS):
        return objective
    return _WithDefaults(objective)


OBJECTIVES: Registry[type] = Registry("objective")


def mean_scores(item_scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Aggregate metrics: the mean of each metric's per-item scores, plus n (the item count)."""
    sizes = {len(scores) for scores in item_scores.values()}
    assert len(sizes) == 1 and 0 not in sizes, f"every metric scores the same, non-empty items: {sizes}"
    return {name: sum(scores) / len(scores) for name, scores in item_scores.items()} | {"n": sizes.pop()}


def _constructors(cls: type) -> list[inspect.Signature]:
    return [inspect.signature(klass.__dict__["__init__"]) for klass in cls.__mro__
            if klass is not object and "__init__" in klass.__dict__]


def _keywords(cls: type) -> set[str]:
    return {p.name for signature in _constructors(cls) for p in signature.parameters.values()
            if p.kind is p.KEYWORD_ONLY}


def objective_options(cls: type) -> list[str] | None:
    """The keyword options an objective class takes besides what the lifecycle gives it (tokenizer,
    splits, processor), over its MRO; None if its base constructor takes any `**options` (it hands
    them on, e.g. multi_task to its primary objective, and what it hands them to checks them)."""
    constructors = _constructors(cls)
    if constructors and any(p.kind is p.VAR_KEYWORD for p in constructors[-1].parameters.values()):
        return None
    return sorted(_keywords(cls) - {"tokenizer", "splits", "processor"})


TEST_SPLIT = "test"
_SET_NAME = re.compile(r"[A-Za-z0-9_-]+")


def table_splits(test: Any) -> dict[str, Any]:
    """`objective.test` as the objective's test splits, {split name: spec}, in order.

    Named test sets are a mapping with no `source` key whose values are all mappings (each a
    split spec with its own `source`): one split "test.<name>" per set (the name is its config
    path, objective.test.<name>), each scored into its own table. Anything else is one split spec
    (a file path, or a mapping with a `source` key; a bad one is refused by the objective's data
    loader, as before): the one split "test".

        {source: zoo, task: ja_math, split: test}                    -> {"test": ...}
        {wild: {source: ja_vlm_wild, ...}, vg: {source: ja_vg_vqa, ...}} -> {"test.wild": ..., "test.vg": ...}
    """
    if not isinstance(test, Mapping) or "source" in test or not test:
        return {TEST_SPLIT: test}
    nested = [name for name, value in test.items() if isinstance(value, Mapping)]
    if not nested:
        return {TEST_SPLIT: test}  # a spec without `source`: the loader says what is missing
    for name, spec in test.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"objective.test.{name} is {spec!r}: named test sets (as objective.test.{nested[0]}) are "
                             f"{{name: {{source: ..., ...}}}}; a local file is e.g. {{source: tsv, path: FILE}}")
        if not isinstance(name, str) or not _SET_NAME.fullmatch(name):
            raise ValueError(f"objective.test: test set name {name!r} must be letters, digits, _ or - (it names a "
                             f"split, MLflow metrics and files)")
    return {f"{TEST_SPLIT}.{name}": spec for name, spec in test.items()}


def build_objective(spec: Any, tokenizer: Any, splits: Sequence[str] = ("search", "test"), *,
                    processor: Any = None) -> Any:
    """The registered objective an `objective` config (name, search, test, options) names, its data
    prepared once, with the defaults of the optional members it lacks (`with_defaults`). Its
    options (`objective.options`: generation settings included, for a generative objective) are
    checked by name first. `splits`: the config keys whose specs it loads; "test" stands for every
    split of `table_splits(spec.test)` (one "test", or "test.<name>" per named test set).
    `processor`: a vision-language model's processor, given to objectives that take one."""
    specs = {}
    for name in splits:
        specs |= table_splits(spec.test) if name == TEST_SPLIT else {name: getattr(spec, name)}
    return make_objective(spec.name, tokenizer=tokenizer, splits=specs, options=spec.options, processor=processor)


def make_objective(name: str, *, tokenizer: Any, splits: Mapping[str, Any], options: Mapping[str, Any],
                   processor: Any = None) -> Any:
    """The registered objective `name` on split specs {split name: spec}, with `options` checked
    by name (a one-line ValueError listing the known ones) and the contract's defaults."""
    cls = OBJECTIVES.get(name)
    known = objective_options(cls)
    unknown = [] if known is None else sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"objective {name!r} has no option {', '.join(unknown)}; known: {', '.join(known)}")
    given = {"processor": processor} if "processor" in _keywords(cls) else {}
    objective = cls(tokenizer=tokenizer, splits=dict(splits), **given, **options)
    assert isinstance(objective, Objective), f"{cls.__name__} does not implement the objective contract"
    return with_defaults(objective)
