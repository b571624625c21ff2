"""Per-trial wall time of our parameter-space loop vs a mergekit-evolve-style loop, side by side.

    .venv/bin/python bench/ps_trial_loop.py                        # zoo/models, dare_ties at density 1 and 0.5
    .venv/bin/python bench/ps_trial_loop.py --method task_arithmetic --trials 5 --limit 150
    .venv/bin/python bench/ps_trial_loop.py --zoo /tmp/zoo_smoke --trials 1 --limit 8 --densities 1

Both loops get the same zoo models, the same prompts (the zoo objective's search split, first
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
      (measured by wrapping that method: the only monkeypatch, timing only).
The per-layer parameters of trial t are drawn with seed t around a centre (see trial_values); the
merge seed is t too. Trial 0 is a warm-up (not in the means). Differences from mergekit-evolve: float32 instead of its
bfloat16 (the pool's dtype; needed for equal outputs), no ray actor hop (in its favour),
log_samples=True (to compare outputs item by item; mergekit-evolve passes False; milliseconds).
Progress bars that lm-eval forces on (generate_until) go to stderr.
Densities: at 1 dare_ties is deterministic and both loops must give the same outputs; below 1 the
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
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

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
        started = time.perf_counter()
        self.merger.apply(tensor_params, seed=seed)
        merged = time.perf_counter()
        outputs = self.objective.generate(self.pool.model, "search")
        generated = time.perf_counter()
        metrics = self.objective.score_outputs(outputs, "search")
        done = time.perf_counter()
        return {**metrics, "outputs": outputs, "merge": merged - started, "eval": done - merged,
                "gen": generated - merged, "total": done - started}


class MergekitEvolveLoop:
    """(b): mergekit-evolve's on-disk evaluator: run_merge to a temp dir, lm-eval on it, delete it."""

    def __init__(self, *, method, base: str, sources: dict[str, str], settings: dict, batch_size: int,
                 workdir: str | None):
        import lm_eval.models.huggingface
        import lm_eval.tasks

        # time the generation inside lm-eval (the rest of "eval" is loading, task building, scoring)
        self.generate_seconds = 0.0
        hflm = lm_eval.models.huggingface.HFLM
        generate_until = getattr(hflm.generate_until, "__wrapped__", hflm.generate_until)  # wrap once

        def timed_generate_until(lm, *args, **kwargs):
            start = time.perf_counter()
            try:
                return generate_until(lm, *args, **kwargs)
            finally:
                self.generate_seconds += time.perf_counter() - start

        timed_generate_until.__wrapped__ = generate_until
        hflm.generate_until = timed_generate_until

        self.method, self.base, self.sources = method, base, sources
        self.batch_size, self.workdir = batch_size, workdir
        self.gen_kwargs = {"until": list(settings["stop_strings"]), "max_gen_toks": settings["max_new_tokens"],
                           "do_sample": False}
        # built once per study, as mergekit-evolve's strategy does (TaskManager(include_path=...))
        self.task_manager = lm_eval.tasks.TaskManager(
            include_path=str(TASK_DIR),
            metadata={"split": settings["search"], "prompt_template": settings["prompt_template"]})

    def trial(self, tensor_params, seed: int) -> dict:
        import lm_eval
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions

        self.generate_seconds = 0.0
        started = time.perf_counter()
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
        samples = sorted(results["samples"][TASK], key=lambda s: s["doc_id"])
        metrics = results["results"][TASK]
        return {"acc": metrics["acc,none"], "acc_ja": metrics["acc_ja,none"],
                "outputs": [s["filtered_resps"][0] for s in samples],
                "merge": merged - started, "eval": done - merged, "gen": self.generate_seconds,
                "total": done - started}


def run_config(*, ours: OursLoop, theirs: MergekitEvolveLoop, space, density: float | None, trials: int,
               batch_size: int, repeats: int, noise_seeds: int) -> dict:
    """Warm-up + `trials` timed trials of both loops on the same values; prints the table, returns a summary."""
    method, pool, objective = space.method, ours.pool, ours.objective
    n = len(objective.items("search"))
    label = method.name + (f" density={density:g}" if density is not None else "")
    print(f"\n== {label}: {len(space.params)} searched values per trial, {n} prompts, batch {batch_size}, "
          f"{torch.get_num_threads()} torch thread(s) ==")
    print(f"{'':>9} | {'(a) ours: seconds':<27} {'fitness':>13} | {'(b) mergekit + lm-eval: seconds':<27} "
          f"{'fitness':>13} |")
    print(f"{'trial':>9} | {'merge':>6} {'eval':>6} {'(gen)':>6} {'total':>6} {'acc':>6} {'acc_ja':>6} | "
          f"{'merge':>6} {'eval':>6} {'(gen)':>6} {'total':>6} {'acc':>6} {'acc_ja':>6} | same outputs")
    rows = []
    for trial in range(trials + 1):  # trial 0: warm-up
        params = space.tensor_params(trial_values(space, trial, density))
        a, b = ours.trial(params, seed=trial), theirs.trial(params, seed=trial)
        same = sum(x == y for x, y in zip(a["outputs"], b["outputs"]))
        rows.append({"a": a, "b": b, "same": same})
        name = f"{trial} warm-up" if trial == 0 else str(trial)
        cells = [f"{r['merge']:6.3f} {r['eval']:6.3f} {r['gen']:6.3f} {r['total']:6.3f} {r['acc']:6.3f} {r['acc_ja']:6.3f}"
                 for r in (a, b)]
        print(f"{name:>9} | {cells[0]} | {cells[1]} | {same}/{n}")

    timed_rows = rows[1:]

    def mean(loop: str, key: str) -> float:
        return statistics.mean(r[loop][key] for r in timed_rows)

    mean_a, mean_b = mean("a", "total"), mean("b", "total")
    diff = {k: max(abs(r["a"][k] - r["b"][k]) for r in rows) for k in ("acc", "acc_ja")}
    same = sum(r["same"] for r in rows)
    print(f"per trial, mean of trials 1-{trials}: (a) ours {mean_a:.3f} s, (b) mergekit-evolve style {mean_b:.3f} s; "
          f"ratio (b)/(a) = {mean_b / mean_a:.1f}x (merge {mean('b', 'merge') / mean('a', 'merge'):.0f}x, "
          f"eval {mean('b', 'eval') / mean('a', 'eval'):.1f}x, generation alone {mean('b', 'gen') / mean('a', 'gen'):.1f}x)")
    # Amdahl: both loops generate the same tokens with the same model, so no merge or eval overhead
    # of ours can bring (a) below its generation time
    print(f"ceiling: with a free merge and free scoring, (b)/(a) could reach at most (b) / (a)'s generation "
          f"= {mean_b / mean('a', 'gen'):.1f}x")
    print(f"fitness, all {len(rows)} trials: max |acc diff| {diff['acc']:.3f}, max |acc_ja diff| {diff['acc_ja']:.3f}; "
          f"identical outputs {same}/{n * len(rows)}")

    if method.sparsify in ("random", "della") and density < 1 and noise_seeds:
        # the two loops draw different drop masks: how far apart do masks alone put our own fitness?
        spans = {"acc": [], "acc_ja": []}
        for trial, row in enumerate(rows):
            params = space.tensor_params(trial_values(space, trial, density))
            scores = [row["a"]] + [ours.trial(params, seed=1000 * (trial + 1) + k) for k in range(noise_seeds)]
            for key, span in spans.items():
                span.append(f"[{min(r[key] for r in scores):.2f}-{max(r[key] for r in scores):.2f}] {row['b'][key]:.2f}")
        for key, span in spans.items():
            print(f"mask noise, {key}: (a) over {noise_seeds + 1} merge seeds [min-max] vs (b), per trial: {', '.join(span)}")

    params = space.tensor_params(trial_values(space, 1, density))
    merge_ms = timed(lambda: ours.merger.apply(params, seed=1), repeats)
    copy_ms = copy_bound_ms(ours.merger, pool.live_params(), repeats)
    run_merge_ms = 1e3 * mean("b", "merge")
    print(f"merge only: ours {merge_ms:.2f} ms/apply vs torch copy of the same bytes {copy_ms:.2f} ms "
          f"(ratio {merge_ms / copy_ms:.2f}); (b) merge step (config + run_merge to disk) {run_merge_ms:.0f} ms "
          f"({run_merge_ms / merge_ms:.0f}x ours)")
    return {"label": label, "rows": rows, "mean_a": mean_a, "mean_b": mean_b, "diff": diff, "same": same,
            "n": n, "merge_ms": merge_ms, "copy_ms": copy_ms}


def run(*, zoo: Path, method: str, densities: list[float], trials: int, limit: int, batch_size: int | None,
        threads: int, workdir: str | None, noise_seeds: int = 4, repeats: int = 5) -> list[dict]:
    """One config per density (one config for methods without density); each config's summary."""
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
    theirs = MergekitEvolveLoop(method=merge, base=base, sources=sources, settings=settings,
                                batch_size=batch_size, workdir=workdir)
    return [run_config(ours=ours, theirs=theirs, space=space, density=density, trials=trials,
                       batch_size=batch_size, repeats=repeats, noise_seeds=noise_seeds)
            for density in densities]


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
    parser.add_argument("--workdir", default=None, help="where mergekit writes each trial's model (default: system temp)")
    args = parser.parse_args()
    try:
        run(zoo=args.zoo, method=args.method, densities=args.densities, trials=args.trials, limit=args.limit,
            batch_size=args.batch_size, threads=args.threads, workdir=args.workdir, noise_seeds=args.noise_seeds)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
