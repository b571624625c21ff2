"""Per-trial (and per-study) cost of our parameter-space loop vs mergekit-evolve's loops, side by side.

    .venv/bin/python bench/ps_trial_loop.py                        # zoo/models, dare_ties at density 1 and 0.5
    .venv/bin/python bench/ps_trial_loop.py --method task_arithmetic --trials 5 --limit 150
    .venv/bin/python bench/ps_trial_loop.py --zoo ZOO_DIR --trials 1 --limit 8 --densities 1
    .venv/bin/python bench/ps_trial_loop.py --trials 3 --limit 150 --densities 1 \
        --peers on_disk in_memory_shipped in_memory_bf16 in_memory_fp32 --study   # docs/benchmarks.md

--peers picks mergekit-evolve's loops to run beside ours (default: on_disk): (b) on_disk, and its
in-memory evaluator (c) as shipped (bf16, lm-eval batch 1), (d) bf16 batched, (e) fp32 batched, its
best on CPU. Each row prints wall and CPU seconds (this process's, so a loaded machine shows in wall
only). --study also runs `python -m evo_ps` whole (the demo, or the overrides given) and prints each
peer's cost at that study's trial count (its fixed cost + trials x its mean trial) against ours;
repeated (`--study --study evaluation=multi_fidelity`), each study runs in turn against the same peers.

All loops get the same zoo models, the same prompts (the zoo objective's search split, first
--limit items), the same generation settings and the same per-layer merge parameters per trial:
  (a) ours, exactly what evo_ps/__main__.py does per trial: the pool loaded once, then
      InMemoryMerger.apply(space.tensor_params(values), seed) + objective.score(pool.model, "search")
      (timed as generate + score_outputs, which is what score is, to keep the outputs);
  (b) mergekit-evolve's OnDiskMergeEvaluator (mergekit/evo/helpers.py merge_model + evaluate_model,
      without ray): the mergekit config for the same values (evo_ps.mergekit_yaml), run_merge into a
      fresh temp dir with mergekit-evolve's MergeOptions, lm-eval simple_evaluate with the HF backend
      on that dir (model and tokenizer loaded from disk each trial), then the dir deleted. The task
      is bench/lm_eval_task (generate_until, greedy, the objective's max tokens and stop strings
      passed as gen_kwargs, the prompts filled by our template code); lm-eval computes acc and
      acc_ja itself, in the task's process_results, with the objectives' own answer extractor and
      fastText detector. The TaskManager (task index) is built once, as mergekit-evolve does.
      Its "eval" is simple_evaluate + deleting the dir; "gen" is the part inside HFLM.generate_until
      (measured by wrapping that method: timing only);
  (c)-(e) mergekit-evolve's InMemoryMergeEvaluator (mergekit/evo/actors.py), called as its strategy
      calls it, evaluate_genotype per trial, with the four changes it needs to run here applied at
      run time, nothing installed edited: ray and vllm stubbed, its planner's pydantic field
      re-declared, the batch size it drops given to its HFLM, and the rotary frequencies its forced
      bf16 rounds recomputed (mergekit_evolve_in_memory_evaluator, MergekitEvolveInMemoryLoop); (c)
      "as shipped" gets all but the batch size. Its outputs are taken from HFLM.generate_until (it
      runs lm-eval with log_samples=False), its merge time is up to its call of lm-eval.
The per-layer parameters of trial t are drawn with seed t around a centre (see trial_values); the
merge seed is t too. Trial 0 is a warm-up (not in the means). Differences of (b) from
mergekit-evolve: float32 instead of its bfloat16 (the pool's dtype; needed for equal outputs), no ray actor hop (in its favour),
log_samples=True (to compare outputs item by item; mergekit-evolve passes False; milliseconds).
Progress bars that lm-eval forces on (generate_until) go to stderr.
Densities: at 1 dare_ties is deterministic and the float32 loops must give the same outputs; below 1 the
random drops come from different generators, so fitness agrees only within sampling noise: the
"mask noise" line shows our fitness over --noise-seeds more merge seeds of each trial's values.
Printed per config: each trial's merge / eval / total seconds and (acc, acc_ja) for both loops and
how many outputs are identical, the mean per-trial seconds and the ratio (b)/(a), the ceiling of
that ratio while both loops run the same generation (Amdahl: (b) over our generation alone), a merge-only
line: InMemoryMerger.apply vs a plain torch copy of the bytes it reads (bench/merge_bandwidth.py's
bound) and vs mergekit's run_merge.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # transformers', datasets' and most of lm-eval's progress bars

import argparse  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH_DIR))
import objectives  # noqa: E402
import zoo  # noqa: E402,F401  (registers the "zoo" data source)
from evo_core import load_pool  # noqa: E402
from evo_ps import MERGE_METHODS, InMemoryMerger, build_space, merge_method, mergekit_yaml  # noqa: E402
from merge_bandwidth import copy_bound_ms, timed  # noqa: E402

TASK_DIR = BENCH_DIR / "lm_eval_task"
TASK = "bench_zoo_ja_math"
OBJECTIVE_CONF = ROOT / "conf" / "objective" / "zoo_ja_math.yaml"
POOL_CONF = ROOT / "conf" / "pool" / "zoo.yaml"
DEFAULT_ZOO = ROOT / "zoo" / "models"
JITTER = 0.25  # per-value spread of the trial parameters around their centre (see trial_values)

# the loops, by --peers name: ours, and mergekit-evolve's evaluators (module docstring)
OURS = "ours"
TAGS = {OURS: "(a)", "on_disk": "(b)", "in_memory_shipped": "(c)", "in_memory_bf16": "(d)", "in_memory_fp32": "(e)"}
LABELS = {OURS: "ours (evo_ps)",
          "on_disk": "on-disk: run_merge + lm-eval, fp32",
          "in_memory_shipped": "in-memory as shipped: bf16, batch 1",
          "in_memory_bf16": "in-memory, bf16, batched",
          "in_memory_fp32": "in-memory, fp32, batched"}
PEERS = [name for name in TAGS if name != OURS]


def objective_settings(limit: int) -> dict:
    """The zoo objective as evo_ps runs it (conf/objective/zoo_ja_math.yaml), search split cut to `limit`."""
    cfg = OmegaConf.to_container(OmegaConf.load(OBJECTIVE_CONF))
    cfg |= cfg.pop("options")  # the generation settings (prompt template, max_new_tokens, ...), one level up
    # the lm-eval task scores with this detector (bench/lm_eval_task/utils.py)
    assert cfg["language_detector"] == "fasttext", cfg["language_detector"]
    return {**cfg, "search": {**cfg["search"], "limit": limit}}


def zoo_paths(zoo: Path) -> tuple[str, dict[str, str]]:
    """Base and source dirs of a zoo laid out as conf/pool/zoo.yaml names them (<zoo>/<name>)."""
    names = list(OmegaConf.load(POOL_CONF).sources)  # keys only: the paths are this zoo's
    if not all((zoo / name / "config.json").is_file() for name in ("base", *names)):
        raise FileNotFoundError(f"{zoo} is not a built zoo (needs base/ and {'/, '.join(names)}/ model dirs); "
                                f"build it with `make zoo` or pass --zoo DIR")
    return str(zoo / "base"), {name: str(zoo / name) for name in names}


def trial_values(space, trial: int, density: float | None) -> dict[str, float]:
    """Trial `trial`'s parameters: centre + uniform jitter +-JITTER per value, clipped; densities pinned.

    The centre (the first source, the Japanese expert in conf/pool/zoo.yaml, at weight 1 and the
    others at 0.5) is where the zoo gives Japanese answers: uniform draws over [0, 1] score
    acc_ja = 0 on every trial, and agreement on zeros would prove little.
    """
    rng = random.Random(trial)
    values = {}
    for place, spec in zip(space.placements, space.params):
        if place.key == "density" and density is not None:
            values[spec.name] = density
            continue
        centre = (1.0 if place.source == space.sources[0] else 0.5) if place.key == "weight" else (spec.low + spec.high) / 2
        values[spec.name] = min(spec.high, max(spec.low, centre + rng.uniform(-JITTER, JITTER)))
    return values


class OursLoop:
    """(a): evo_ps's per-trial work on a pool and objective built once."""

    def __init__(self, *, pool, method, objective):
        self.pool, self.objective = pool, objective
        self.merger = InMemoryMerger(pool=pool, method=method)

    def trial(self, tensor_params, seed: int) -> dict:
        started, cpu = time.perf_counter(), time.process_time()
        self.merger.apply(tensor_params, seed=seed)
        merged = time.perf_counter()
        outputs = self.objective.generate(self.pool.model, "search")
        generated = time.perf_counter()
        metrics = self.objective.score_outputs(outputs, "search")
        done = time.perf_counter()
        return {**metrics, "outputs": outputs, "merge": merged - started, "eval": done - merged,
                "gen": generated - merged, "total": done - started, "cpu": time.process_time() - cpu}


def time_lm_eval_generation() -> dict:
    """Wrap HFLM.generate_until (once) to add its seconds to the returned dict's "seconds" (a loop
    zeroes it per trial) and keep its answers in "outputs": the generation inside lm-eval (the rest
    of "eval" is loading, task building, scoring), and the outputs of mergekit-evolve's in-memory
    evaluator, which runs lm-eval with log_samples=False. It changes nothing lm-eval does."""
    import lm_eval.models.huggingface

    hflm = lm_eval.models.huggingface.HFLM
    if not hasattr(hflm.generate_until, "record"):
        generate_until, record = hflm.generate_until, {"seconds": 0.0, "outputs": []}

        def timed_generate_until(lm, *args, **kwargs):
            start = time.perf_counter()
            try:
                record["outputs"] = generate_until(lm, *args, **kwargs)  # in request order: one per item
                return record["outputs"]
            finally:
                record["seconds"] += time.perf_counter() - start

        timed_generate_until.record = record
        hflm.generate_until = timed_generate_until
    return hflm.generate_until.record


def bench_task_manager(settings: dict):
    """lm-eval's task index with bench/lm_eval_task, built once per study as mergekit-evolve's
    strategy does (TaskManager(include_path=...))."""
    import lm_eval.tasks

    return lm_eval.tasks.TaskManager(
        include_path=str(TASK_DIR),
        metadata={"split": settings["search"], "prompt_template": settings["prompt_template"]})


def lm_eval_outputs(results: dict) -> dict:
    """acc, acc_ja and the outputs in item order from simple_evaluate's results (log_samples=True)."""
    samples = sorted(results["samples"][TASK], key=lambda s: s["doc_id"])
    metrics = results["results"][TASK]
    return {"acc": metrics["acc,none"], "acc_ja": metrics["acc_ja,none"],
            "outputs": [s["filtered_resps"][0] for s in samples]}


class MergekitEvolveLoop:
    """(b): mergekit-evolve's on-disk evaluator: run_merge to a temp dir, lm-eval on it, delete it."""

    def __init__(self, *, method, base: str, sources: dict[str, str], settings: dict, batch_size: int,
                 workdir: str | None):
        started, cpu = time.perf_counter(), time.process_time()
        self.generation = time_lm_eval_generation()
        self.method, self.base, self.sources = method, base, sources
        self.batch_size, self.workdir = batch_size, workdir
        self.gen_kwargs = {"until": list(settings["stop_strings"]), "max_gen_toks": settings["max_new_tokens"],
                           "do_sample": False}
        self.task_manager = bench_task_manager(settings)
        self.setup_seconds, self.setup_cpu = time.perf_counter() - started, time.process_time() - cpu

    def trial(self, tensor_params, seed: int) -> dict:
        import lm_eval
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions

        self.generation["seconds"] = 0.0
        started, cpu = time.perf_counter(), time.process_time()
        text = mergekit_yaml(method=self.method, tensor_params=tensor_params, base=self.base,
                             sources=self.sources, dtype="float32")
        out = tempfile.mkdtemp(prefix="merged", dir=self.workdir)
        try:
            (Path(out) / "mergekit_config.yml").write_text(text, encoding="utf-8")
            # mergekit-evolve's MergeOptions (scripts/evolve.py), CPU
            run_merge(MergeConfiguration.model_validate(yaml.safe_load(text)), out,
                      MergeOptions(out_shard_size=1_000_000_000_000, random_seed=seed, quiet=True,
                                   copy_tokenizer=True, safe_serialization=True))
            merged = time.perf_counter()
            results = lm_eval.simple_evaluate(
                model="hf", model_args={"pretrained": out, "dtype": "float32", "use_cache": True},
                tasks=[TASK], device="cpu", batch_size=self.batch_size, gen_kwargs=self.gen_kwargs,
                task_manager=self.task_manager, log_samples=True, verbosity="ERROR")
        finally:
            shutil.rmtree(out)
        done = time.perf_counter()
        return {**lm_eval_outputs(results), "merge": merged - started, "eval": done - merged,
                "gen": self.generation["seconds"], "total": done - started, "cpu": time.process_time() - cpu}


def mergekit_evolve_in_memory_evaluator():
    """mergekit 0.1.5's InMemoryMergeEvaluator (mergekit/evo/actors.py), made to import and run here
    by the changes it needs, applied in this process at run time (nothing installed is edited):
    1. `ray` and `vllm` are not installed (nor needed on one CPU): a stub `ray` whose `remote` leaves
       the class as it is (the actor hop is skipped, in its favour), and a stub
       `lm_eval.models.vllm_causallms` (actors.py names its VLLM class in an annotation; vllm=False
       never builds one);
    2. its planner's `ReturnTensor.tensor_task: Task[torch.Tensor]` makes pydantic try to build the
       abstract generic on every tensor ("Can't instantiate abstract class Task[Tensor]"): the field
       is re-declared as plain `Task`, as mergekit's own TensorWriterTask declares it, and rebuilt.
    The other two changes are per evaluator (MergekitEvolveInMemoryLoop)."""
    import importlib.util

    import lm_eval.models

    if "ray" not in sys.modules and importlib.util.find_spec("ray") is None:
        def remote(*args, **kwargs):  # @ray.remote and @ray.remote(num_cpus=...): the thing itself
            return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else (lambda thing: thing)

        ray = sys.modules["ray"] = types.ModuleType("ray")
        ray.remote = remote
        ray.util = sys.modules["ray.util"] = types.ModuleType("ray.util")
        for name in ("queue", "scheduling_strategies"):
            setattr(ray.util, name, types.ModuleType(f"ray.util.{name}"))
            sys.modules[f"ray.util.{name}"] = getattr(ray.util, name)
    if importlib.util.find_spec("vllm") is None and not hasattr(lm_eval.models, "vllm_causallms"):
        stub = sys.modules["lm_eval.models.vllm_causallms"] = types.ModuleType("lm_eval.models.vllm_causallms")
        stub.VLLM = type("VLLM", (), {})
        lm_eval.models.vllm_causallms = stub

    import mergekit.evo.actors
    from mergekit.graph import Task
    from mergekit.io.tasks import ReturnTensor

    if ReturnTensor.model_fields["tensor_task"].annotation is not Task:
        ReturnTensor.model_fields["tensor_task"].annotation = Task
        ReturnTensor.model_rebuild(force=True)
    return mergekit.evo.actors.InMemoryMergeEvaluator


def restore_rotary_frequencies(model) -> int:
    """Recompute every rotary embedding's frequency buffers in float32 (returns how many). The
    evaluator builds its model with `.bfloat16()`, which rounds these non-persistent buffers too, and
    no merge ever writes them back: positions drift from the models' own (as loaded from disk)."""
    count = 0
    for module in model.modules():
        if isinstance(getattr(module, "inv_freq", None), torch.Tensor) and hasattr(module, "config"):
            fresh = type(module)(config=module.config)
            for name in ("inv_freq", "original_inv_freq"):
                if hasattr(module, name):
                    setattr(module, name, getattr(fresh, name).to(module.inv_freq.device))
            count += 1
    return count


class MergekitEvolveInMemoryLoop:
    """(c)-(e): mergekit-evolve's InMemoryMergeEvaluator: one live model, the merge planned and run
    by mergekit's executor into its parameters, lm-eval's simple_evaluate on its HFLM. Its genotype
    decoding is bypassed: the evaluator gets the mergekit config of our values (evo_ps.mergekit_yaml,
    what its genome would build from its own genotype), so every loop merges the same recipe. The
    two changes beyond mergekit_evolve_in_memory_evaluator's, applied to the evaluator's model when
    it builds it: the generation batch (it passes batch_size to simple_evaluate, which ignores it for
    a ready LM object, so its HFLM runs batch 1), skipped for "as shipped"; and the rotary
    frequencies restore_rotary_frequencies recomputes. dtype float32 also turns the model it forces
    to bf16 back to float32 (the merge itself is written in the config's dtype)."""

    def __init__(self, *, method, base: str, sources: dict[str, str], settings: dict, dtype: str,
                 batch_size: int | None):
        started, cpu = time.perf_counter(), time.process_time()
        from mergekit.evo.config import EvolMergeConfiguration
        from mergekit.evo.genome import METHOD_PARAM_MAPS, ModelGenome
        from mergekit.options import MergeOptions

        if method.name not in METHOD_PARAM_MAPS:
            raise ValueError(f"mergekit-evolve's genome has no merge method {method.name!r} (it knows "
                             f"{', '.join(METHOD_PARAM_MAPS)}): pick another --method or --peers on_disk")
        evaluator_class = mergekit_evolve_in_memory_evaluator()
        self.generation = time_lm_eval_generation()
        self.method, self.base, self.sources, self.dtype = method, base, sources, dtype
        # a mergekit-evolve config for this task; no chat template (the zoo's tokenizer has none,
        # and the other loops run lm-eval without one); the generation settings are the task yaml's
        config = EvolMergeConfiguration.model_validate({
            "genome": {"models": list(sources.values()), "base_model": base, "merge_method": method.name,
                       "layer_granularity": 1},
            "tasks": [{"name": TASK, "metric": "acc_ja,none"}],
            "apply_chat_template": False, "fewshot_as_multiturn": False})
        evaluator = evaluator_class(config, ModelGenome(config.genome),
                                    MergeOptions(out_shard_size=1_000_000_000_000, quiet=True),
                                    batch_size=batch_size, task_manager=bench_task_manager(settings))
        evaluator.genome.genotype_merge_config = lambda merge_config: merge_config  # our recipe (docstring)
        init_model, ready = evaluator._maybe_init_model, []

        def init_and_adjust(merge_config):
            init_model(merge_config)
            if ready and ready[-1] is evaluator.model:
                return
            lm = evaluator.model
            if dtype == "float32":
                lm.model.float()
            restore_rotary_frequencies(lm.model)
            if batch_size is not None:
                lm.batch_size_per_gpu = batch_size
            ready.append(lm)

        evaluator._maybe_init_model = init_and_adjust
        # where its merge ends and lm-eval starts (timing only): the module-level function it calls
        import mergekit.evo.actors as actors

        if not hasattr(actors._eval_model, "started"):  # wrapped once, shared by every evaluator
            eval_model = actors._eval_model

            def timed_eval_model(*args, **kwargs):
                timed_eval_model.started[0] = time.perf_counter()
                return eval_model(*args, **kwargs)

            timed_eval_model.started = [None]
            actors._eval_model = timed_eval_model
        self.eval_started = actors._eval_model.started
        self.evaluator = evaluator
        self.setup_seconds, self.setup_cpu = time.perf_counter() - started, time.process_time() - cpu

    def trial(self, tensor_params, seed: int) -> dict:
        import transformers
        from mergekit.config import MergeConfiguration

        self.generation["seconds"] = 0.0
        started, cpu = time.perf_counter(), time.process_time()
        text = mergekit_yaml(method=self.method, tensor_params=tensor_params, base=self.base,
                             sources=self.sources, dtype=self.dtype)
        merge_config = MergeConfiguration.model_validate(yaml.safe_load(text))
        # the in-memory path never seeds its random drops (run_merge seeds from MergeOptions): seeded
        # here as the on-disk loop is, so that every loop's trial t draws with seed t
        transformers.set_seed(seed)
        self.eval_started[0] = None
        result = self.evaluator.evaluate_genotype(merge_config)
        done = time.perf_counter()
        metrics = result["results"][TASK]
        return {"acc": metrics["acc,none"], "acc_ja": metrics["acc_ja,none"],
                "outputs": list(self.generation["outputs"]), "merge": self.eval_started[0] - started,
                "eval": done - self.eval_started[0], "gen": self.generation["seconds"], "total": done - started,
                "cpu": time.process_time() - cpu}


def run_config(*, ours: OursLoop, peers: dict[str, Any], space, density: float | None, trials: int,
               batch_size: int, repeats: int, noise_seeds: int) -> dict:
    """Warm-up + `trials` timed trials of every loop on the same values; prints the table, returns a summary."""
    method, pool, objective = space.method, ours.pool, ours.objective
    n = len(objective.items("search"))
    label = method.name + (f" density={density:g}" if density is not None else "")
    print(f"\n== {label}: {len(space.params)} searched values per trial, {n} prompts, batch {batch_size}, "
          f"{torch.get_num_threads()} torch thread(s) ==")
    print(f"{'trial':>9} | {'loop':<40} | {'merge':>6} {'eval':>6} {'(gen)':>6} {'total':>6} {'cpu':>6} | "
          f"{'acc':>6} {'acc_ja':>6} | same outputs as (a)")
    loops = {OURS: ours, **peers}
    rows = []
    for trial in range(trials + 1):  # trial 0: warm-up
        params = space.tensor_params(trial_values(space, trial, density))
        row = {key: loop.trial(params, seed=trial) for key, loop in loops.items()}
        rows.append(row)
        name = f"{trial} warm-up" if trial == 0 else str(trial)
        for key, r in row.items():
            same = sum(x == y for x, y in zip(row[OURS]["outputs"], r["outputs"]))
            print(f"{name:>9} | {LABELS[key]:<40} | {r['merge']:6.3f} {r['eval']:6.3f} {r['gen']:6.3f} "
                  f"{r['total']:6.3f} {r['cpu']:6.3f} | {r['acc']:6.3f} {r['acc_ja']:6.3f} | {same}/{n}")
            name = ""

    timed_rows = rows[1:]

    def mean(loop: str, key: str) -> float:
        return statistics.mean(r[loop][key] for r in timed_rows)

    summary = {"label": label, "rows": rows, "n": n, "trials": trials, "peers": {}}
    mean_a, cpu_a = mean(OURS, "total"), mean(OURS, "cpu")
    print(f"per trial, mean of trials 1-{trials}: (a) ours {mean_a:.3f} s wall, {cpu_a:.3f} s CPU")
    for key in peers:
        tag = TAGS[key]
        mean_b, cpu_b = mean(key, "total"), mean(key, "cpu")
        diff = {k: max(abs(r[OURS][k] - r[key][k]) for r in rows) for k in ("acc", "acc_ja")}
        same = sum(sum(x == y for x, y in zip(r[OURS]["outputs"], r[key]["outputs"])) for r in rows)
        print(f"{tag} {LABELS[key]}: {mean_b:.3f} s wall, {cpu_b:.3f} s CPU; ratio {tag}/(a) = "
              f"{mean_b / mean_a:.1f}x wall, {cpu_b / cpu_a:.1f}x CPU "
              f"(merge {mean(key, 'merge') / mean(OURS, 'merge'):.0f}x, eval {mean(key, 'eval') / mean(OURS, 'eval'):.1f}x, "
              f"generation alone {mean(key, 'gen') / mean(OURS, 'gen'):.1f}x)")
        # Amdahl: every loop generates the same tokens with the same model, so no merge or eval
        # overhead of ours can bring (a) below its generation time
        print(f"    ceiling: with a free merge and free scoring, {tag}/(a) could reach at most {tag} / (a)'s "
              f"generation = {mean_b / mean(OURS, 'gen'):.1f}x")
        print(f"    fitness, all {len(rows)} trials: max |acc diff| {diff['acc']:.3f}, max |acc_ja diff| "
              f"{diff['acc_ja']:.3f}; identical outputs {same}/{n * len(rows)}")
        # what the peer pays once per study beyond its trials: building it, and its first trial's
        # extra (model init, lm-eval's first task build) over a timed trial's
        fixed = peers[key].setup_seconds + rows[0][key]["total"] - mean_b
        fixed_cpu = peers[key].setup_cpu + rows[0][key]["cpu"] - cpu_b
        summary["peers"][key] = {"mean": mean_b, "cpu": cpu_b, "fixed": fixed, "fixed_cpu": fixed_cpu, "same": same,
                                 "diff": diff}
    summary |= {"mean_a": mean_a, "cpu_a": cpu_a}

    if method.sparsify in ("random", "della") and density < 1 and noise_seeds:
        # the loops draw different drop masks: how far apart do masks alone put our own fitness?
        spans = {key: {"acc": [], "acc_ja": []} for key in peers}
        for trial, row in enumerate(rows):
            params = space.tensor_params(trial_values(space, trial, density))
            scores = [row[OURS]] + [ours.trial(params, seed=1000 * (trial + 1) + k) for k in range(noise_seeds)]
            for key in peers:
                for metric, span in spans[key].items():
                    span.append(f"[{min(r[metric] for r in scores):.2f}-{max(r[metric] for r in scores):.2f}] "
                                f"{row[key][metric]:.2f}")
        for key in peers:
            for metric, span in spans[key].items():
                print(f"mask noise, {metric}: (a) over {noise_seeds + 1} merge seeds [min-max] vs {TAGS[key]}, "
                      f"per trial: {', '.join(span)}")

    params = space.tensor_params(trial_values(space, 1, density))
    merge_ms = timed(lambda: ours.merger.apply(params, seed=1), repeats)
    copy_ms = copy_bound_ms(ours.merger, pool.live_params(), repeats)
    line = (f"merge only: ours {merge_ms:.2f} ms/apply vs torch copy of the same bytes {copy_ms:.2f} ms "
            f"(ratio {merge_ms / copy_ms:.2f})")
    for key in peers:
        peer_ms = 1e3 * mean(key, "merge")
        line += f"; {TAGS[key]} merge step {peer_ms:.0f} ms ({peer_ms / merge_ms:.0f}x ours)"
    print(line)
    return summary | {"merge_ms": merge_ms, "copy_ms": copy_ms}


def run(*, zoo: Path, method: str, densities: list[float], trials: int, limit: int, batch_size: int | None,
        threads: int, workdir: str | None, noise_seeds: int = 4, repeats: int = 5, peers: list[str] = ("on_disk",),
        study: list[list[str]] | None = None) -> list[dict]:
    """One config per density (one config for methods without density); each config's summary. With
    `study` (lists of overrides for `python -m evo_ps`, possibly empty), each of those studies is run
    too and each peer's study cost is scaled from its per-trial and fixed cost to its number of trials."""
    unknown = sorted(set(peers) - set(PEERS))
    if unknown or not peers:
        raise ValueError(f"--peers: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(PEERS)}")
    if trials < 1 or limit < 1 or (batch_size is not None and batch_size < 1):
        raise ValueError(f"--trials, --limit and --batch-size must be >= 1; got {trials}, {limit}, {batch_size}")
    if noise_seeds < 0:
        raise ValueError(f"--noise-seeds must be >= 0; got {noise_seeds}")
    merge = merge_method(method)
    if merge.combine == "slerp":
        raise ValueError("slerp merges exactly 2 models; the zoo has 3 sources: pick another --method")
    base, sources = zoo_paths(Path(zoo))
    settings = objective_settings(limit)
    torch.set_num_threads(threads)
    # lm-eval and mergekit log per call; keep the table readable
    for name in ("lm_eval", "mergekit", "transformers", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)

    pool = load_pool(base=base, sources=sources, dtype="float32", device="cpu")
    space = build_space(method=merge, sources=pool.source_names, tensor_names=pool.param_names,
                        num_layers=pool.num_layers)
    bounds = {(spec.low, spec.high) for place, spec in zip(space.placements, space.params) if place.key == "density"}
    if not bounds:
        densities = [None]
    for low, high in bounds:
        bad = [d for d in densities if not low <= d <= high]
        if bad:
            raise ValueError(f"{method} densities must lie in [{low:g}, {high:g}]; got {bad}")
    print(f"zoo {zoo}: {sum(t.numel() for t in pool.base.values()) / 1e6:.2f}M params, sources {', '.join(sources)}")
    batch_size = batch_size or limit
    objective = objectives.build(
        settings["name"], tokenizer=pool.tokenizer, splits={"search": settings["search"]},
        prompt_template=settings["prompt_template"], max_new_tokens=settings["max_new_tokens"],
        stop_strings=settings["stop_strings"], batch_size=batch_size,
        language_detector=settings["language_detector"])
    ours = OursLoop(pool=pool, method=merge, objective=objective)
    loops = {}
    for name in PEERS:  # in table order
        if name == "on_disk" and name in peers:
            loops[name] = MergekitEvolveLoop(method=merge, base=base, sources=sources, settings=settings,
                                             batch_size=batch_size, workdir=workdir)
        elif name in peers:
            loops[name] = MergekitEvolveInMemoryLoop(
                method=merge, base=base, sources=sources, settings=settings,
                dtype="float32" if name == "in_memory_fp32" else "bfloat16",
                batch_size=None if name == "in_memory_shipped" else batch_size)
    summaries = [run_config(ours=ours, peers=loops, space=space, density=density, trials=trials,
                            batch_size=batch_size, repeats=repeats, noise_seeds=noise_seeds)
                 for density in densities]
    for overrides in study or ():
        study_costs(our_study(overrides, workdir=workdir), summaries[0])
    return summaries


def our_study(overrides: list[str], *, workdir: str | None) -> dict:
    """`python -m evo_ps <overrides>` run whole in a fresh run dir (deleted after): its wall and CPU
    seconds (the child's user + system) and its number of finished trials, all phases."""
    import resource

    import optuna

    with tempfile.TemporaryDirectory(prefix="study", dir=workdir) as run_dir:
        command = [sys.executable, "-m", "evo_ps", *overrides, f"run_dir={run_dir}",
                   f"tracking.mlruns_dir={run_dir}/mlruns"]
        print(f"\n== whole study: python -m evo_ps {' '.join(overrides)} (run dir and MLflow store in a temp dir) ==",
              flush=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode:
            raise RuntimeError(f"the study failed: {proc.stderr.strip().splitlines()[-1:]}")
        storage = f"sqlite:///{run_dir}/study.db"
        trials = sum(len([t for t in optuna.load_study(study_name=summary.study_name, storage=storage).trials
                          if t.state.is_finished()])
                     for summary in optuna.get_all_study_summaries(storage))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # the base and source rows come from the user's row cache when an earlier study scored them
    cached = proc.stdout.count(": cached, not scored again")
    print(f"ours: {trials} trials in {wall:.1f} s wall, {cpu:.1f} s CPU (start-up, test table, export and logging "
          f"included; test-table rows read from the row cache: {cached})")
    return {"wall": wall, "cpu": cpu, "trials": trials, "cached_rows": cached}


def study_costs(ours: dict, summary: dict) -> None:
    """Each peer's study at our study's trial count: its fixed cost + trials x its mean trial, against
    ours as run. The peers' figure leaves out what ours includes beyond trials (a test table, an
    export): mergekit-evolve has no test table, and its export (one run_merge) is one on-disk merge."""
    n = ours["trials"]
    for key, peer in summary["peers"].items():
        wall, cpu = peer["fixed"] + n * peer["mean"], peer["fixed_cpu"] + n * peer["cpu"]
        print(f"per study, {n} trials: {TAGS[key]} {LABELS[key]}: {wall:.0f} s wall, {cpu:.0f} s CPU "
              f"(fixed {peer['fixed']:.1f} s wall / {peer['fixed_cpu']:.1f} s CPU + {n} x {peer['mean']:.2f} s wall / "
              f"{peer['cpu']:.3f} s CPU); ratio {TAGS[key]}/ours = "
              f"{wall / ours['wall']:.2f}x wall, {cpu / ours['cpu']:.2f}x CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=DEFAULT_ZOO, help="dir with base/, ja/, math_wiz/, math_abel/")
    searchable = [m for m in MERGE_METHODS  # with something to search, for the zoo's 3 sources
                  if MERGE_METHODS.get(m).params and MERGE_METHODS.get(m).exact_sources is None]
    parser.add_argument("--method", default="dare_ties", choices=searchable)
    parser.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5],
                        help="one config per density (methods with a density); 1 = deterministic")
    parser.add_argument("--trials", type=int, default=3, help="timed trials per config, after one warm-up")
    parser.add_argument("--limit", type=int, default=100, help="first N prompts of the search split")
    parser.add_argument("--batch-size", type=int, default=None, help="generation batch, both loops (default: --limit)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (evo_ps's default: 1)")
    parser.add_argument("--noise-seeds", type=int, default=4,
                        help="random drops (density < 1): re-merge each trial with this many more seeds (ours)")
    parser.add_argument("--peers", nargs="+", default=["on_disk"], choices=PEERS,
                        help="mergekit-evolve loops beside ours (module docstring); all: " + " ".join(PEERS))
    parser.add_argument("--study", nargs="*", action="append", default=None, metavar="OVERRIDE",
                        help="also run `python -m evo_ps OVERRIDE...` whole (no overrides: the demo) and print "
                             "each peer's cost at its trial count; repeat it for several studies, run one by one")
    parser.add_argument("--workdir", default=None, help="where mergekit writes each trial's model (default: system temp)")
    args = parser.parse_args()
    try:
        run(zoo=args.zoo, method=args.method, densities=args.densities, trials=args.trials, limit=args.limit,
            batch_size=args.batch_size, threads=args.threads, workdir=args.workdir, noise_seeds=args.noise_seeds,
            peers=args.peers, study=args.study)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
