"""`multi_task`: one objective made of several registered ones, for a fitness whose items span
tasks (M2N2's resources: each expert holds the items of its own task). A plugin module: a config
that uses it names it in `imports` (`[objectives, zoo, evo_breed.multitask]`); importing it
registers the objective, once.

    objective:
      name: multi_task
      fitness: acc_ja                 # a metric of the primary task (unprefixed)
      search: {...}                   # the primary task's splits
      test: {...}
      options:
        primary: mgsm_ja              # the primary task's registered objective
        tasks:                        # more tasks, each with its objective, splits and options
          en_math: {name: mgsm_ja, search: {...}, test: {...}}
          ja_qa: {name: answer_match, search: {...}, test: {...}, options: {}}

Metrics: the primary's as they are (acc, acc_ja), each other task's as "<task>.<metric>"
(en_math.acc). The shared keys of the objective group (prompt template, generation settings)
go to every task that takes them. Every task must score the same number of items per split (the
objective contract: every metric scores the same items; set each split's `limit`), checked here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evo_core import OBJECTIVES, Metric, objective_options

SHARED = ("prompt_template", "max_new_tokens", "stop_strings", "batch_size", "language_detector", "chat_template",
          "allow_overlap", "decoding")


class MultiTaskObjective:
    metrics: tuple[Metric, ...] = ()
    default_fitness = "acc_ja"

    def __init__(self, *, tokenizer: Any, splits: Mapping[str, Any], primary: str = "mgsm_ja",
                 tasks: Mapping[str, Mapping[str, Any]] | None = None, prompt_template: str | None = None,
                 max_new_tokens: int | None = None, stop_strings: list[str] | None = None, batch_size: int | None = None,
                 language_detector: str | None = None, chat_template: bool | None = None,
                 allow_overlap: bool | None = None, decoding: Mapping[str, Any] | None = None):
        shared = {k: v for k, v in dict(prompt_template=prompt_template, max_new_tokens=max_new_tokens,
                                        stop_strings=stop_strings, batch_size=batch_size,
                                        language_detector=language_detector, chat_template=chat_template,
                                        allow_overlap=allow_overlap, decoding=decoding).items() if v is not None}
        if not tasks:
            raise ValueError("objective multi_task: options.tasks names no task; add e.g. "
                             "en_math: {name: mgsm_ja, search: ..., test: ...}")
        self.tasks = {"": self._build(primary, tokenizer, splits, shared, {})}
        for task, spec in tasks.items():
            unknown = sorted(set(spec) - {"name", "search", "test", "options"})
            if unknown or "name" not in spec:
                raise ValueError(f"objective multi_task: task {task!r} needs name, search, test (and optional "
                                 f"options); got {', '.join(sorted(spec))}")
            task_splits = {s: spec[s] for s in splits if s in spec}
            missing = [s for s in splits if s not in spec]
            if missing:
                raise ValueError(f"objective multi_task: task {task!r} has no split {', '.join(missing)}")
            self.tasks[f"{task}."] = self._build(spec["name"], tokenizer, task_splits, shared,
                                                 dict(spec.get("options") or {}))
        self.metrics = tuple(Metric(prefix + m.name, m.higher_is_better)
                             for prefix, sub in self.tasks.items() for m in sub.metrics)
        for split in splits:
            sizes = {prefix.rstrip(".") or primary: len(sub._split(split).items)
                     for prefix, sub in self.tasks.items() if hasattr(sub, "_split")}
            if len(set(sizes.values())) > 1:
                raise ValueError(f"objective multi_task: split {split!r} has {sizes} items per task; every task "
                                 f"must score as many (set each task's {split}.limit)")

    @staticmethod
    def _build(name: str, tokenizer: Any, splits: Mapping[str, Any], shared: Mapping[str, Any],
               options: Mapping[str, Any]):
        cls = OBJECTIVES.get(name)
        known = objective_options(cls)
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"objective {name!r} has no option {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(tokenizer=tokenizer, splits=splits, **{k: v for k, v in shared.items() if k in known}, **options)

    def split_names(self) -> list[str]:
        return self.tasks[""].split_names()

    def n_items(self, split: str) -> int:
        return self.tasks[""].n_items(split)  # every task scores as many (checked above)

    def score_items(self, model: Any, split: str, items: Sequence[int] | None = None) -> dict[str, list[float]]:
        return {prefix + metric: scores for prefix, sub in self.tasks.items()
                for metric, scores in sub.score_items(model, split, items).items()}


def register() -> None:
    """Register "multi_task" unless it is (a test may have restored the registry since the import)."""
    if "multi_task" not in OBJECTIVES:
        OBJECTIVES.register("multi_task", MultiTaskObjective)


register()
