"""`objective=lm_eval`: any lm-evaluation-harness task (or several, weighted) as the fitness.

    obj = objectives.build("lm_eval", tokenizer=tok,
                           splits={"search": {"split": "validation"}, "test": {"split": "test"}},
                           tasks=[{"name": "zoo_en_math_choice", "weight": 1.0, "metric": "acc"},
                                  {"name": "zoo_ja_qa_choice", "weight": 1.0}],
                           task_paths=["zoo/lm_eval_tasks"], limit=50)
    obj.score(model, "search")   # {"score": 1.23, "zoo_en_math_choice.acc": 0.6, ..., "n": 100}

The options are mergekit-evolve's: `tasks` [{name, weight (1.0), metric}], `task_paths` (folders
of task YAMLs: lm-eval's include_path, mergekit-evolve's --task-search-path), `num_fewshot`,
`limit` (items per task of the SEARCH split: the test split is always scored whole),
`apply_chat_template`, `fewshot_as_multiturn`; plus `batch_size` and `allow_overlap`.

Metrics. `score` (the default fitness) is mergekit-evolve's: the sum over tasks of weight x the
task's metric. Every per-item metric of every task is a metric too, `<task>.<metric>`, with the
filter after a dot when it is not lm-eval's "none" (`zoo_ja_math.exact_match.ja_answer`); a
task's `metric` is written as lm-eval writes it ("acc", "acc,none", "exact_match,ja_answer").
Only metrics lm-eval aggregates by the mean of per-item values are per-item metrics (perplexities
are not); a fitness metric must be one.

Items and per-item scores. A split's items are its tasks' docs, interleaved in proportion (so a
race's first blocks hold every task). Item i of task t (n_t of the split's N items, weight w_t,
lm-eval's per-sample value s_i, from evaluate(log_samples=True)) scores N/n_t * s_i for
`<t>.<metric>` (0 on other tasks' items) and w_t * N/n_t * s_i for `score`: so the mean over the
split is exactly the task's lm-eval number, and the weighted sum; over a random block, an unbiased
estimate. score_items(items=) scores only those items (lm-eval's `samples`): racing and evo_breed
(its resources may be `<task>.<metric>`: each task's items) work on lm-eval tasks.

Splits. A split spec is {split: validation | test | train, items: "START:STOP"} (items optional,
Python slice bounds over the task's docs; `limit` then keeps the search split's first N per task):

    search: {split: validation}          # default (conf/objective/lm_eval.yaml)
    test: {split: test}                  # lm-eval's own split: the table's number is lm-eval's
    test: {split: test, items: "100:"}   # a part of it

A task that has only one of validation and test (its one usable split) is divided instead: the
search split takes its first half, the test split the rest; a construction line says so, and the
test table shows the range (`<task>.first_item`, `<task>.items`). Every split's items must be
disjoint from every other's (objectives' check_disjoint on the docs' prompts; allow_overlap=True
turns it off), so overlapping ranges are refused.

Bad input fails in one line at construction, before any model loads: an unknown task (with the
nearest names), a task YAML that does not parse (file:line), a metric the task does not produce, a
hub dataset that cannot be fetched (the dataset, and the YAML key to point at a local copy), a
`limit` larger than the split, a weight that is not a finite number.

The model: each score runs lm-eval's evaluate on `live_lm(model, tokenizer)`, an lm-eval LM over
the live in-memory model (no reload, no copy to disk; _lm_eval_model.py), made once per model object.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import json
import logging
import math
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import yaml

from evo_core import Metric, ObjectiveDefaults, atomic_write_text, mean_scores

from ._base import register
from ._data import check_disjoint
from ._lm_eval_model import LiveModelLM

SPLIT_ROLES = ("validation", "test", "train")  # what a split spec's `split` may name
_CONFIG_SPLIT = {"validation": "validation_split", "test": "test_split", "train": "training_split"}
# dataset builders of `datasets` that read local files: a task naming one is not on the hub
_LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas", "webdataset", "imagefolder", "audiofolder"}


class _NoModel(torch.nn.Module):
    """A stand-in model for LiveModelLM's tokenization alone (no forward is run)."""

    config = None


def live_lm(model: Any, tokenizer: Any, *, batch_size: int = 16) -> Any:
    """An lm-eval LM over `model` as it is in memory (its weights change in place between trials):
    LiveModelLM, lm-eval's HF numbers with a context shared by its choices encoded once."""
    return LiveModelLM(model=model, tokenizer=tokenizer, batch_size=batch_size)


@dataclass(frozen=True)
class TaskSpec:
    """One entry of `tasks`: mergekit-evolve's {name, weight, metric}."""

    name: str
    weight: float = 1.0
    metric: str | None = None  # lm-eval's "metric" or "metric,filter"; None: the task's first

    @classmethod
    def parse(cls, index: int, entry: Any) -> "TaskSpec":
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ValueError(f"objective.options.tasks[{index}] must be a task name or {{name, weight, metric}}, "
                             f"got {entry!r}")
        unknown = sorted(set(entry) - {"name", "weight", "metric"})
        if unknown:
            raise ValueError(f"objective.options.tasks[{index}] ({entry['name']}) has no key {', '.join(unknown)}; "
                             f"known: name, weight, metric")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f"objective.options.tasks[{index}] ({entry['name']}): weight must be a finite number, "
                             f"got {weight!r}")
        metric = entry.get("metric")
        if metric is not None and not isinstance(metric, str):
            raise ValueError(f"objective.options.tasks[{index}] ({entry['name']}): metric must be a string such as "
                             f"'acc' or 'acc,none', got {metric!r}")
        return cls(name=entry["name"], weight=float(weight), metric=metric)


def metric_name(task: str, metric: str, filter_name: str) -> str:
    """Our name of lm-eval's metric `metric,filter` of `task` (MLflow allows no comma)."""
    return f"{task}.{metric}" if filter_name == "none" else f"{task}.{metric}.{filter_name}"


def check_task_yamls(paths: Sequence[str | Path]) -> None:
    """Every *.yaml under the task folders parses (lm-eval's `!function` tags allowed), else one
    line naming the file and line. lm-eval's own index would skip or misreport a broken file."""
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    for folder in paths:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"objective.options.task_paths: {folder} is not a folder of task YAMLs")
        for path in sorted(Path(folder).rglob("*.yaml")):
            try:
                yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
                where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
                problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                raise ValueError(f"{where}: task YAML does not parse ({problem})") from None


def _task_manager(task_paths: Sequence[str | Path], names: Sequence[str]) -> Any:
    """lm-eval's TaskManager over the task folders; lm-eval's own 14,000-odd task YAMLs are indexed
    (about 20 s, a minute on a busy machine) only when a task is not in the folders: a study on
    its own tasks starts at once."""
    from lm_eval.tasks import TaskManager

    with _quiet():
        if task_paths:
            local = TaskManager(include_path=[str(p) for p in task_paths], include_defaults=False)
            if all(name in local.all_tasks for name in names):
                return local
        return TaskManager(include_path=[str(p) for p in task_paths] or None, include_defaults=True)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers: False in offline mode (HF_HUB_OFFLINE,
    HF_DATASETS_OFFLINE) or when its host does not accept a connection within `timeout`. Behind
    a proxy the probe cannot tell, so the hub counts as reachable."""
    import datasets.config

    if datasets.config.HF_HUB_OFFLINE or os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    return _accepts_connections(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


@functools.cache  # probed once per process: every task of a study asks
def _accepts_connections(endpoint: str, timeout: float) -> bool:
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _offline(offline: bool):
    """`datasets` and huggingface_hub in offline mode (the local cache only) while `offline`."""
    if not offline:
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    before = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = before


@contextlib.contextmanager
def _quiet():
    """lm-eval and `datasets` log at INFO/WARNING for every task built and every evaluate: only
    their errors are shown."""
    loggers = [logging.getLogger(name) for name in ("lm_eval", "datasets")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@dataclass
class _SplitTask:
    """One task in one split: its lm-eval task object (evaluating the split's docs) and the doc
    indices this split holds."""

    spec: TaskSpec
    task: Any
    docs: list[int]
    divided: bool = False


class LMEvalObjective(ObjectiveDefaults):
    """lm-eval tasks as the objective contract (module docstring)."""

    default_fitness = "score"

    def __init__(
        self,
        *,
        tokenizer: Any,
        splits: Mapping[str, Any],
        tasks: Sequence[Any],
        task_paths: Sequence[str] = (),
        num_fewshot: int | None = None,
        limit: int | None = None,
        apply_chat_template: bool = False,
        fewshot_as_multiturn: bool = False,
        batch_size: int = 16,
        allow_overlap: bool = False,
    ):
        # the cheap checks first: options, then the YAML files, then the tasks (which read data)
        if not tasks:
            raise ValueError("objective.options.tasks must name at least one lm-eval task, e.g. "
                             "[{name: zoo_en_math_choice, weight: 1.0, metric: acc}]")
        self.specs = [TaskSpec.parse(i, entry) for i, entry in enumerate(tasks)]
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"objective.options.tasks names a task twice: {', '.join(names)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"objective.options.limit must be a positive integer (items per task), got {limit!r}")
        if num_fewshot is not None and (isinstance(num_fewshot, bool) or not isinstance(num_fewshot, int)
                                        or num_fewshot < 0):
            raise ValueError(f"objective.options.num_fewshot must be an integer >= 0, got {num_fewshot!r}")
        if batch_size < 1:
            raise ValueError(f"objective.options.batch_size must be >= 1, got {batch_size}")
        if apply_chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("objective.options.apply_chat_template=true but the tokenizer has no chat template")
        specs = {name: self._split_spec(name, spec) for name, spec in splits.items()}
        check_task_yamls(task_paths)
        self.tokenizer, self.batch_size, self.limit = tokenizer, batch_size, limit
        self.num_fewshot, self.apply_chat_template = num_fewshot, apply_chat_template
        self.fewshot_as_multiturn = fewshot_as_multiturn

        self.task_manager = _task_manager(task_paths, names)
        known = self.task_manager.all_tasks
        for spec in self.specs:
            if spec.name not in known:
                near = difflib.get_close_matches(spec.name, known, n=3, cutoff=0.5)
                raise ValueError(f"unknown lm-eval task {spec.name!r}"
                                 + (f"; nearest: {', '.join(near)}" if near else "")
                                 + ("" if task_paths else "; a folder of your own task YAMLs goes in "
                                    "objective.options.task_paths"))
        self._splits = {name: self._load_split(name, spec) for name, spec in specs.items()}
        if not allow_overlap:
            check_disjoint({name: [(self._prompt(t, d), "") for t in split for d in t.docs]
                            for name, split in self._splits.items()})
        self._order = {name: self._interleave(split) for name, split in self._splits.items()}
        self._per_item: dict[str, dict[str, tuple[str, str]]] = {}  # task -> our name -> (metric, filter)
        self._fitness_key: dict[str, str] = {}  # task -> our name of its fitness metric
        self._metrics = self._check_metrics()
        self._lm: tuple[Any, Any] | None = None  # (model, its LM): made once per model object
        self._last: dict[str, list[dict[str, Any]]] = {}  # split -> the last whole-split per-sample records
        self._scored: tuple[Any, str] | None = None  # the last score_items result and its split (aggregate)
        self._references: dict[str, tuple[list, list]] = {}  # split -> likelihood contexts and targets (ids)
        self.last_work: dict[str, int] = {}  # what the last likelihood_items spent

    # -- construction -----------------------------------------------------------------------------------
    @staticmethod
    def _split_spec(name: str, spec: Any) -> dict[str, Any]:
        if not isinstance(spec, Mapping) or set(spec) - {"split", "items"} or spec.get("split") not in SPLIT_ROLES:
            raise ValueError(f"objective.{name} of objective lm_eval is {{split: {' | '.join(SPLIT_ROLES)}, "
                             f"items: 'START:STOP' (optional)}}, got {spec!r}")
        items = spec.get("items")
        if items is not None and not re.fullmatch(r"\s*\d*\s*:\s*\d*\s*", str(items)):
            raise ValueError(f"objective.{name}.items must be a range 'START:STOP' (either may be left out), "
                             f"got {items!r}")
        return dict(spec)

    def _build_task(self, spec: TaskSpec) -> Any:
        """lm-eval's task object; a hub dataset that cannot be fetched is said in one line (and
        while the hub is unreachable only the local cache is tried: no minute of retries)."""
        config = self._task_config(spec.name) or {}
        dataset = config.get("dataset_path")
        on_hub = bool(dataset) and not config.get("custom_dataset") and dataset not in _LOCAL_BUILDERS \
            and not Path(str(dataset)).exists()
        try:
            with _quiet(), _offline(on_hub and not hub_reachable()):
                loaded = self.task_manager.load([spec.name])
        except Exception as err:
            if on_hub:
                raise FileNotFoundError(
                    f"lm-eval task {spec.name!r}: dataset {dataset!r} is on the hub and cannot be fetched "
                    f"({type(err).__name__}); download it and point the task YAML's dataset_path at the local copy "
                    f"(or dataset_path: json with dataset_kwargs.data_files)") from None
            raise ValueError(f"lm-eval task {spec.name!r} cannot be built ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''})") from None
        tasks = loaded["tasks"]
        if len(tasks) != 1:
            raise ValueError(f"lm-eval name {spec.name!r} is a group or tag of {len(tasks)} tasks "
                             f"({', '.join(sorted(tasks)[:5])}{', ...' if len(tasks) > 5 else ''}); "
                             f"name its tasks one by one in objective.options.tasks")
        task = next(iter(tasks.values()))
        if self.num_fewshot is not None:
            task.set_config(key="num_fewshot", value=self.num_fewshot)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=1234)  # simple_evaluate's default fewshot_random_seed
        return task

    def _task_config(self, name: str) -> dict[str, Any] | None:
        """The task's YAML as a dict (for error messages), if it has one."""
        entry = self.task_manager.task_index.get(name)
        path = getattr(entry, "yaml_path", None)
        if path is None:
            return None

        class Loader(yaml.SafeLoader):
            pass

        Loader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix}")
        with contextlib.suppress(Exception):
            return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=Loader)
        return None

    def _load_split(self, name: str, spec: dict[str, Any]) -> list[_SplitTask]:
        out = []
        for task_spec in self.specs:
            task = self._build_task(task_spec)
            role = spec["split"]
            dataset_split = getattr(task.config, _CONFIG_SPLIT[role], None)
            usable = [r for r in ("validation", "test") if getattr(task.config, _CONFIG_SPLIT[r], None)]
            # one usable split, and the default specs: search and test divide it
            divided = role in ("validation", "test") and len(usable) == 1 and spec.get("items") is None
            if divided:
                dataset_split = getattr(task.config, _CONFIG_SPLIT[usable[0]])
            elif dataset_split is None:
                has = [r for r in SPLIT_ROLES if getattr(task.config, _CONFIG_SPLIT[r], None)]
                raise ValueError(f"objective.{name}: lm-eval task {task_spec.name!r} has no {role} split "
                                 f"(it has {', '.join(has) or 'none'})")
            # the task evaluates what its test_docs give: point them at this split's dataset split
            task.config.test_split = dataset_split
            n = len(task.eval_docs)
            if divided:
                half = n // 2
                docs = list(range(half)) if role == "validation" else list(range(half, n))
                print(f"lm_eval: task {task_spec.name} has one usable split ({dataset_split}, {n} items): "
                      f"objective.{name} takes items {docs[0]}:{docs[-1] + 1}", flush=True)
            else:
                start, stop = _bounds(spec.get("items"), n)
                docs = list(range(start, stop))
            if name == "search" and self.limit is not None:
                if self.limit > len(docs):
                    raise ValueError(f"objective.options.limit={self.limit} is larger than the search split of "
                                     f"lm-eval task {task_spec.name!r} ({len(docs)} items of {dataset_split})")
                docs = docs[:self.limit]
            if not docs:
                raise ValueError(f"objective.{name}: lm-eval task {task_spec.name!r} has no items in "
                                 f"{dataset_split} {spec.get('items') or ''}".rstrip())
            out.append(_SplitTask(spec=task_spec, task=task, docs=docs, divided=divided))
        return out

    @staticmethod
    def _prompt(split_task: _SplitTask, doc_index: int) -> str:
        """What identifies a doc across splits: its prompt text (and choices, for multiple choice)."""
        task = split_task.task
        doc = task.eval_docs[doc_index]
        text = str(task.doc_to_text(doc))
        if task.OUTPUT_TYPE == "multiple_choice":
            text += " || " + " | ".join(map(str, task.doc_to_choice(doc)))
        return text

    @staticmethod
    def _interleave(split: list[_SplitTask]) -> list[tuple[int, int]]:
        """The split's items as (task position, doc index), the tasks' docs interleaved in proportion."""
        keyed = [((k + 0.5) / len(t.docs), ti, d) for ti, t in enumerate(split) for k, d in enumerate(t.docs)]
        return [(ti, d) for _, ti, d in sorted(keyed)]

    def _check_metrics(self) -> tuple[Metric, ...]:
        """Every task's per-item metrics (mean-aggregated), and its fitness metric among them."""
        from lm_eval.api.metrics import mean

        first = next(iter(self._splits.values()))
        names: list[str] = ["score"]
        for split_task in first:
            task, spec = split_task.task, split_task.spec
            filters = [f.name for f in task._filters]
            aggregations = task.aggregation()
            produced = [f"{m},{f}" for f in filters for m in aggregations]
            per_item = {metric_name(spec.name, m, f): (m, f) for f in filters for m, agg in aggregations.items()
                        if agg is mean}
            wanted = spec.metric or produced[0]
            if "," not in wanted:
                wanted += f",{filters[0]}" if len(filters) == 1 or "none" not in filters else ",none"
            if wanted not in produced:
                raise ValueError(f"lm-eval task {spec.name!r} does not produce metric {spec.metric!r}; it produces "
                                 f"{', '.join(produced)}")
            metric, filter_name = wanted.split(",", 1)
            if metric_name(spec.name, metric, filter_name) not in per_item:
                raise ValueError(f"lm-eval task {spec.name!r}: metric {wanted!r} is not a mean of per-item values, "
                                 f"so it cannot be a fitness (racing and breeding score items); per-item: "
                                 f"{', '.join(f'{m},{f}' for m, f in per_item.values())}")
            self._per_item[spec.name] = per_item
            self._fitness_key[spec.name] = metric_name(spec.name, metric, filter_name)
            names += list(per_item)
        return tuple(Metric(n) for n in names)

    # -- the contract -------------------------------------------------------------------------------------
    @property
    def metrics(self) -> tuple[Metric, ...]:
        return self._metrics

    def split_names(self) -> list[str]:
        return list(self._splits)

    def n_items(self, split: str) -> int:
        return len(self._items(split))

    def _items(self, split: str) -> list[tuple[int, int]]:
        if split not in self._order:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(self._order)}")
        return self._order[split]

    def lm(self, model: Any) -> Any:
        """The lm-eval LM over `model`, made once per model object (a trial's merge is the same object)."""
        if self._lm is None or self._lm[0] is not model:
            self._lm = (model, live_lm(model, self.tokenizer, batch_size=self.batch_size))
        return self._lm[1]

    def score_items(self, model: Any, split: str, items: Sequence[int] | None = None) -> dict[str, list[float]]:
        """Per metric, per item (module docstring: the scaling that makes means lm-eval's numbers)."""
        from lm_eval.evaluator import evaluate

        self.last_work = {}  # lm-eval reports no token counts; a likelihood call's are not this call's
        order = self._items(split)
        chosen = [order[i] for i in (range(len(order)) if items is None else items)]
        split_tasks = self._splits[split]
        wanted: dict[int, list[int]] = {}
        for ti, d in chosen:
            wanted.setdefault(ti, []).append(d)
        task_dict = {"tasks": {split_tasks[ti].task.task_name: split_tasks[ti].task for ti in wanted},
                     "groups": {}, "group_map": {}}
        samples = {split_tasks[ti].task.task_name: sorted(set(docs)) for ti, docs in wanted.items()}
        with _quiet():
            results = evaluate(self.lm(model), task_dict, samples=samples, log_samples=True, bootstrap_iters=0,
                               apply_chat_template=self.apply_chat_template,
                               fewshot_as_multiturn=self.fewshot_as_multiturn)
        values: dict[tuple[int, int], dict[str, float]] = {}  # (task, doc) -> our metric name -> value
        records = []
        for ti in wanted:
            t = split_tasks[ti]
            for sample in results["samples"][t.task.task_name]:
                for name, (metric, filter_name) in self._per_item[t.spec.name].items():
                    if sample["filter"] == filter_name and metric in sample:
                        values.setdefault((ti, sample["doc_id"]), {})[name] = float(sample[metric])
                records.append({"task": t.spec.name, **{k: sample[k] for k in ("doc_id", "filter", "target",
                                                                                "filtered_resps")},
                                **{m: sample[m] for m in sample.get("metrics", [])}})
        total = len(order)
        counts = {ti: len(t.docs) for ti, t in enumerate(split_tasks)}
        scores: dict[str, list[float]] = {m.name: [] for m in self._metrics}
        for ti, d in chosen:
            t, got = split_tasks[ti], values[(ti, d)]
            scale = total / counts[ti]
            for m in self._metrics[1:]:
                scores[m.name].append(scale * got[m.name] if m.name in self._per_item[t.spec.name] else 0.0)
            scores["score"].append(t.spec.weight * scale * got[self._fitness_key[t.spec.name]])
        if items is None:  # a whole split: its samples are kept, and aggregate adds its item ranges
            self._last[split] = records
            self._scored = (scores, split)
        return scores

    def likelihood_items(self, model: Any, split: str, items: Sequence[int] | None = None) -> list[float]:
        """Per item (of the split, or `items`): the mean log-probability per token of its task's
        target(s) (doc_to_target, after the task's target_delimiter) after its few-shot context,
        tokenized as lm-eval splits a log-likelihood request (_likelihood.py). generate_until tasks
        only: what they score is text the target stands for."""
        from ._likelihood import reference_logprobs

        order = self._items(split)
        if split not in self._references:
            self._references[split] = self._likelihood_requests(split)
        contexts, references = self._references[split]
        index = range(len(order)) if items is None else items
        values, self.last_work = reference_logprobs(model, self.tokenizer, contexts=[contexts[i] for i in index],
                                                    references=[references[i] for i in index],
                                                    batch_size=self.batch_size)
        return values

    def _likelihood_requests(self, split: str) -> tuple[list[list[int]], list[list[list[int]]]]:
        """Each item's context ids and target ids, built once per split (the few-shot examples drawn once)."""
        split_tasks = self._splits[split]
        for t in split_tasks:
            if t.task.OUTPUT_TYPE != "generate_until":
                raise ValueError(f"evaluation.cheap=likelihood scores the targets of generate_until tasks; lm-eval task "
                                 f"{t.spec.name!r} is {t.task.OUTPUT_TYPE}: use evaluation.cheap=subset")
        if self.apply_chat_template:
            raise ValueError("evaluation.cheap=likelihood does not build chat-template contexts "
                             "(objective.options.apply_chat_template=true): use evaluation.cheap=subset")
        lm = LiveModelLM(model=_NoModel(), tokenizer=self.tokenizer, max_length=1)  # its tokenization only
        contexts, references = [], []
        for ti, d in self._items(split):
            task = split_tasks[ti].task
            doc = task.eval_docs[d]
            context = task.fewshot_context(doc, task.get_config("num_fewshot") or 0)
            targets = task.doc_to_target(doc)
            targets = targets if isinstance(targets, list) else [targets]
            delimiter = task.get_config("target_delimiter") or " "
            pairs = lm.token_pairs([(context, delimiter + str(target)) for target in targets])
            contexts.append(pairs[0][0])
            references.append([continuation for _, continuation in pairs])
        return contexts, references

    def score(self, model: Any, split: str) -> dict[str, float | int]:
        return self.aggregate(self.score_items(model, split))

    def aggregate(self, item_scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
        """The means (lm-eval's numbers and the weighted sum), plus n; for a whole split just scored,
        each divided task's item range too (`<task>.first_item`, `<task>.items`)."""
        out = mean_scores(item_scores)
        if self._scored is not None and self._scored[0] is item_scores:
            for t in self._splits[self._scored[1]]:
                if t.divided:
                    out[f"{t.spec.name}.first_item"] = float(t.docs[0])
                    out[f"{t.spec.name}.items"] = float(len(t.docs))
        return out

    def write_samples(self, split: str, out_dir: str | Path, *, n: int = 24) -> list[Path]:
        """lm-eval's per-sample records of the last whole-split score (the first n per task and filter)."""
        records = self._last.get(split)
        if not records:
            return []
        kept, seen = [], {}
        for record in records:
            key = (record["task"], record["filter"])
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= n:
                kept.append(record)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "samples.jsonl"
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in kept))
        return [path]


def _bounds(items: str | None, n: int) -> tuple[int, int]:
    if items is None:
        return 0, n
    start, stop = (part.strip() for part in str(items).split(":"))
    start, stop = int(start) if start else 0, int(stop) if stop else n
    if stop > n or start >= stop:
        raise ValueError(f"items {items!r} is not a range within the split's {n} items")
    return start, stop


register("lm_eval", LMEvalObjective)
