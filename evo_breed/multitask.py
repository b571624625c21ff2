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
        max_new_tokens: 40            # the primary's options (generation settings), every task's defaults
        primary: mgsm_ja              # the primary task's registered objective
        tasks:                        # more tasks, each with its objective, splits and options
          en_math: {name: mgsm_ja, search: {...}, test: {...}}
          ja_qa: {name: answer_match, search: {...}, test: {...}, options: {max_new_tokens: 64}}

Each task is an objective config of its own ({name, search, test, options}), built by evo_core's
`build_objective` as the study's objective is; the primary is `make_objective` of `primary` on the
study's splits with the other options. Those options (the primary's: prompt template, generation
settings) are also every task's defaults, for the options its objective takes; a task's own
`options` override them. Metrics: the primary's as they are (acc, acc_ja), each other task's as
"<task>.<metric>" (en_math.acc). Every task must score the same number of items per split (the
objective contract: every metric scores the same items; set each split's `limit`), checked here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evo_core import (OBJECTIVES, Metric, ObjectiveConfig, ObjectiveDefaults, build_objective, make_objective,
                      objective_options)

TASK_KEYS = ("name", "search", "test", "options")


class MultiTaskObjective(ObjectiveDefaults):
    metrics: tuple[Metric, ...] = ()
    default_fitness = "acc_ja"

    def __init__(self, *, tokenizer: Any, splits: Mapping[str, Any], primary: str = "mgsm_ja",
                 tasks: Mapping[str, Mapping[str, Any]] | None = None, **options: Any):
        if not tasks:
            raise ValueError("objective multi_task: options.tasks names no task; add e.g. "
                             "en_math: {name: mgsm_ja, search: ..., test: ...}")
        self.tasks = {"": make_objective(primary, tokenizer=tokenizer, splits=splits, options=options)}
        keys = list(dict.fromkeys(split.partition(".")[0] for split in splits))  # config keys: search, test
        for task, spec in tasks.items():
            unknown = sorted(set(spec) - set(TASK_KEYS))
            if unknown or "name" not in spec:
                raise ValueError(f"objective multi_task: task {task!r} needs name, search, test (and optional "
                                 f"options); got {', '.join(sorted(spec))}")
            missing = [key for key in keys if key not in spec]
            if missing:
                raise ValueError(f"objective multi_task: task {task!r} has no split {', '.join(missing)}")
            takes = objective_options(OBJECTIVES.get(spec["name"]))
            task_options = ({k: v for k, v in options.items() if takes is None or k in takes}
                            | dict(spec.get("options") or {}))
            config = ObjectiveConfig(name=spec["name"], search=spec.get("search"), test=spec.get("test"),
                                     options=task_options)
            self.tasks[f"{task}."] = build_objective(config, tokenizer, splits=keys)
        self.metrics = tuple(Metric(prefix + m.name, m.higher_is_better)
                             for prefix, sub in self.tasks.items() for m in sub.metrics)
        for split in splits:
            sizes = {prefix.rstrip(".") or primary: sub.n_items(split) for prefix, sub in self.tasks.items()}
            if len(set(sizes.values())) > 1:
                raise ValueError(f"objective multi_task: split {split!r} has {sizes} items per task; every task "
                                 f"must score as many (set each task's {split}.limit)")

    def split_names(self) -> list[str]:
        return self.tasks[""].split_names()

    def n_items(self, split: str) -> int | None:
        return self.tasks[""].n_items(split)  # every task scores as many (checked above)

    def score_items(self, model: Any, split: str, items: Sequence[int] | None = None) -> dict[str, list[float]]:
        return {prefix + metric: scores for prefix, sub in self.tasks.items()
                for metric, scores in sub.score_items(model, split, items).items()}


def register() -> None:
    """Register "multi_task" unless it is (a test may have restored the registry since the import)."""
    if "multi_task" not in OBJECTIVES:
        OBJECTIVES.register("multi_task", MultiTaskObjective)


register()
