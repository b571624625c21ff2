"""The objective contract: what any fitness must give the study lifecycle.

    class Exact(Objective-like):                     # any class with these members
        metrics = (Metric("acc"),)                   # names; higher is better unless said
        default_fitness = "acc"
        def __init__(self, *, tokenizer, splits, **options): ...   # data read and checked here, once
        def split_names(self) -> list[str]: ...
        def score_items(self, model, split) -> dict[str, list[float]]: ...  # per metric, per item, in [0, 1]
        # optional, for evaluation.kind=racing (scoring a trial on blocks of items):
        def n_items(self, split) -> int: ...
        def score_items(self, model, split, items=None): ...   # items: indices; scores in that order
        # optional: a whole split's metrics from its per-item scores, plus "n" (default: mean_scores)
        def aggregate(self, item_scores) -> dict[str, float]: ...

    OBJECTIVES.register("exact", Exact)             # then `objective.name=exact` in a config
    objective = build_objective(cfg.objective, tokenizer)

An item is whatever the objective's data holds (text, images, reference lists); the lifecycle never
looks inside. A metric's value is the mean of its per-item scores, so graded scores (ROUGE-L) and
exact matches (0/1) aggregate alike, and the per-item scores are kept on every trial (the study's
`item_scores` user attribute) for cheaper-fitness schemes and population breeding. An objective
may report a whole split otherwise (a full-evaluation trial's values, the test table), e.g. by the
bootstrap estimate a paper used, through `aggregate` (aggregate_scores); a race's blocks are
always averaged. Nothing here imports an objective: implementations register themselves (the
`objectives` package does so on import).
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ._registry import Registry


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool = True


@runtime_checkable
class Objective(Protocol):
    metrics: Sequence[Metric]
    default_fitness: str

    def split_names(self) -> list[str]: ...

    def score_items(self, model: Any, split: str) -> dict[str, list[float]]: ...


OBJECTIVES: Registry[type] = Registry("objective")


def takes_subsets(objective: Any) -> bool:
    """Whether an objective can score a subset of a split's items (what racing needs)."""
    score = getattr(objective, "score_items", None)
    return (callable(getattr(objective, "n_items", None)) and score is not None
            and "items" in inspect.signature(score).parameters)


def mean_scores(item_scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Aggregate metrics: the mean of each metric's per-item scores, plus n (the item count)."""
    sizes = {len(scores) for scores in item_scores.values()}
    assert len(sizes) == 1 and 0 not in sizes, f"every metric scores the same, non-empty items: {sizes}"
    return {name: sum(scores) / len(scores) for name, scores in item_scores.items()} | {"n": sizes.pop()}


def aggregate_scores(objective: Any, item_scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """A whole split's metrics, plus n: the objective's own `aggregate` if it has one, else the means."""
    aggregate = getattr(objective, "aggregate", None)
    return mean_scores(item_scores) if aggregate is None else aggregate(item_scores)


def _keywords(cls: type) -> set[str]:
    names = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names |= {p.name for p in inspect.signature(init).parameters.values()
                      if p.kind is p.KEYWORD_ONLY}
    return names


def objective_options(cls: type) -> list[str]:
    """The keyword options an objective class takes besides what the lifecycle gives it (tokenizer,
    splits, processor), over its MRO."""
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
                    processor: Any = None) -> Objective:
    """The registered objective an `objective` config group names, its data prepared once. Its
    options (`objective.options` plus the shared keys of the group) are checked by name first.
    `splits`: the config keys whose specs it loads; "test" stands for every split of
    `table_splits(spec.test)` (one "test", or "test.<name>" per named test set).
    `processor`: a vision-language model's processor, given to objectives that take one."""
    cls = OBJECTIVES.get(spec.name)
    known = objective_options(cls)
    unknown = sorted(set(spec.options) - set(known))
    if unknown:
        raise ValueError(f"objective {spec.name!r} has no option {', '.join(unknown)}; known: {', '.join(known)}")
    shared = {"prompt_template": spec.prompt_template, "max_new_tokens": spec.max_new_tokens,
              "stop_strings": spec.stop_strings, "batch_size": spec.batch_size, "chat_template": spec.chat_template,
              "language_detector": spec.language_detector,
              "allow_overlap": spec.allow_overlap, "decoding": spec.decoding}
    if "processor" in _keywords(cls):
        shared["processor"] = processor
        known.append("processor")
    specs = {}
    for name in splits:
        specs |= table_splits(spec.test) if name == TEST_SPLIT else {name: getattr(spec, name)}
    objective = cls(tokenizer=tokenizer, splits=specs,
                    **{k: v for k, v in shared.items() if k in known}, **spec.options)
    assert isinstance(objective, Objective), f"{cls.__name__} does not implement the objective contract"
    return objective
