"""Per-trial cost of the DFS search: the trial itself on the zoo, and the study machinery at paper scale.

    .venv/bin/python bench/dfs_trial_time.py                       # both parts
    .venv/bin/python bench/dfs_trial_time.py --part trial --limit 150 --threads 2
    .venv/bin/python bench/dfs_trial_time.py --part machinery --trials 4 --sqlite-params
    .venv/bin/python bench/dfs_trial_time.py --part trial pool.sources.ja=/other/ja   # any evo_dfs override

Part "trial": the zoo's ja (model A) and math_wiz loaded once, the default objective's search split
(`--limit` problems); for paths of 4 to 16 hops (model A's layers with model B's inserted or
repeated) it times `set_path` and `objective.score(model, "search")`: one DFS trial.

Part "machinery": the paper's space (M = 64 layers, r = 3: T = 192 slots + a 64 x 64 W = 4,288
values; W-net: 192 + 41 = 233) with a free evaluate, so only the study loop is timed: seconds per
trial (ask, suggest, tell, storage, callbacks; median of the trials after the first) for
  * params: one Optuna parameter per value, Optuna's CmaEsSampler (separable), as `space.encoding=params`
  * genome: GenomeCMA (separable and full CMA-ES), as `space.encoding=genome`
in memory and on SQLite (the CLI's storage). Params on SQLite with 4,288 values takes about a minute
per trial: only with --sqlite-params.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from evo_core import ParamSpec, make_sampler, open_study, run_trials, sqlite_url_in  # noqa: E402
from evo_core import GenomeCMA  # noqa: E402
from evo_dfs import DFSSpace, SlotLayout  # noqa: E402

PATHS = {  # hops -> global layers (A = 0..3, B = 4..7)
    4: [0, 1, 2, 3],
    8: [0, 1, 4, 5, 6, 7, 2, 3],
    12: [0, 1, 2, 4, 5, 6, 7, 1, 2, 5, 6, 3],
    16: [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 4, 5, 6, 7, 3],
}


def trial_part(limit: int, repeats: int, overrides: list[str]) -> None:
    import torch
    from hydra import compose, initialize_config_dir
    from transformers import AutoTokenizer

    import zoo  # noqa: F401  (registers the objectives and the zoo's data source)
    from evo_core import build_objective, load_models, register_resolvers
    from evo_dfs import LayerPathForCausalLM, check_sources, validate

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "dfs"), version_base="1.3"):
        cfg = validate(compose("config", overrides=[f"objective.search.limit={limit}", *overrides]))
    check_sources(cfg.pool)
    models = load_models(cfg.pool.sources, dtype=cfg.pool.dtype, device=cfg.pool.device, same_shapes=False)
    assert [len(m.model.layers) for m in models.values()] == [4, 4], "the paths below assume two 4-layer models"
    tokenizer = AutoTokenizer.from_pretrained(next(iter(cfg.pool.sources.values())))
    objective = build_objective(cfg.objective, tokenizer, splits=("search",))
    model = LayerPathForCausalLM.from_sources(list(models.values()), PATHS[4], source_names=list(models)).eval()
    objective.score(model, "search")  # warm-up
    print(f"one DFS trial on the zoo: {limit} search problems, {torch.get_num_threads()} torch thread(s), "
          f"median of {repeats}\n")
    print("| hops | set_path ms | eval s | ms per problem | acc_ja |\n|---|---|---|---|---|")
    for hops, layers in PATHS.items():
        set_times, eval_times = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            model.set_path(layers, [1.0] * hops)
            set_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            metrics = objective.score(model, "search")
            eval_times.append(time.perf_counter() - start)
        ev = statistics.median(eval_times)
        print(f"| {hops} | {1e3 * statistics.median(set_times):.3f} | {ev:.2f} | {1e3 * ev / limit:.1f} | "
              f"{metrics['acc_ja']:.3f} |", flush=True)


def machinery_seconds(space: DFSSpace, encoding: str, storage: str | None, n_trials: int,
                      separable: bool) -> list[float]:
    """Wall seconds of each trial of a study whose evaluate costs nothing."""
    x0 = space.x0()
    specs = [ParamSpec(name=n, low=lo, high=hi, init=x0[n]) for n, (lo, hi) in space.bounds().items()]
    if encoding == "genome":
        sampler, specs = GenomeCMA(space=space, seed=0, popsize=128, separable=separable), []
    else:
        sampler = make_sampler("cmaes", space=specs, seed=0, sigma0=1 / 6, popsize=128, separable=separable)
    study = (open_study(name="bench", storage_url=storage, sampler=sampler) if storage
             else optuna.create_study(sampler=sampler, direction="maximize"))
    stamps = [time.perf_counter()]
    run_trials(study, space=specs, evaluate=lambda values, number: {"acc_ja": 0.5}, fitness=["acc_ja"],
               n_trials=n_trials, on_trial=[lambda s, t: stamps.append(time.perf_counter())])
    return [b - a for a, b in zip(stamps, stamps[1:])]


def cma_generation_seconds(dim: int, separable: bool, popsize: int = 128) -> float:
    """One CMA-ES generation outside Optuna: tell `popsize` solutions, ask the next `popsize`."""
    import numpy as np
    from cmaes import CMA, SepCMA

    cma = (SepCMA if separable else CMA)(mean=np.full(dim, 0.5), sigma=1 / 6, bounds=np.tile([0.0, 1.0], (dim, 1)),
                                         seed=0, population_size=popsize)
    asked = [cma.ask() for _ in range(popsize)]
    start = time.perf_counter()
    cma.tell([(x, float(k)) for k, x in enumerate(asked)])
    [cma.ask() for _ in range(popsize)]
    return time.perf_counter() - start


def full_cma_sample_seconds(dim: int) -> float:
    import numpy as np
    from cmaes import CMA

    cma = CMA(mean=np.full(dim, 0.5), sigma=1 / 6, seed=0)
    cma.ask()  # the first eigendecomposition
    start = time.perf_counter()
    cma._sample_solution()  # what each of an ask's up-to-101 draws costs
    return time.perf_counter() - start


def machinery_part(n_trials: int, sqlite_params: bool) -> None:
    import warnings

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    layout = SlotLayout(layers_per_model=(32, 32), repeats=3)
    spaces = {"matrix": DFSSpace(layout=layout), "wnet": DFSSpace(layout=layout, scales="wnet", hidden=8)}
    cases = [  # encoding, scales, separable, SQLite
        ("params", "matrix", True, False), ("params", "matrix", True, True), ("params", "wnet", False, True),
        ("genome", "matrix", True, False), ("genome", "matrix", True, True), ("genome", "wnet", False, True)]
    print(f"\nstudy loop per trial at paper scale (M = 64, r = 3), popsize 128, {n_trials} trials with a free "
          f"evaluate; median of trials 2..{n_trials} (Optuna samples trial 1 independently)\n")
    print("| encoding | scales | values | CMA-ES | storage | s per trial | first trial s |\n" + "|---" * 7 + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (encoding, scales, separable, sqlite) in enumerate(cases):
            space = spaces[scales]
            row = f"| {encoding} | {scales} | {space.dim} | {'separable' if separable else 'full'} | " \
                  f"{'SQLite' if sqlite else 'memory'} |"
            if encoding == "params" and scales == "matrix" and sqlite and not sqlite_params:
                print(f"{row} (run with --sqlite-params) | |", flush=True)
                continue
            storage = sqlite_url_in(Path(tmp) / f"case{i}.db") if sqlite else None
            times = machinery_seconds(space, encoding, storage, n_trials, separable)
            print(f"{row} {statistics.median(times[1:]):.3f} | {times[0]:.3f} |", flush=True)
    print("\ngenome mode adds one CMA-ES generation (tell 128 + ask 128) per 128 trials:\n")
    print("| values | CMA-ES | s per generation | s per trial |\n|---|---|---|---|")
    for dim, separable in ((4288, True), (233, False)):
        seconds = cma_generation_seconds(dim, separable)
        print(f"| {dim} | {'separable' if separable else 'full'} | {seconds:.2f} | {seconds / 128:.3f} |", flush=True)
    # full CMA-ES at 4,288 values: cmaes draws each sample as B diag(D) z, an n^3 product, and redraws
    # up to 100 times per ask until the sample is inside the bounds -- so one sample is timed here
    print(f"| 4288 | full | one sample alone: {full_cma_sample_seconds(4288):.1f} s; an ask redraws up to 101 "
          f"samples to stay in bounds, a generation asks 128 | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("trial", "machinery", "both"), default="both")
    parser.add_argument("--limit", type=int, default=150, help="search problems per trial (the default config's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the trial part")
    parser.add_argument("--trials", type=int, default=4, help="trials per machinery case")
    parser.add_argument("--sqlite-params", action="store_true", help="also time params mode at 4,288 values on SQLite")
    parser.add_argument("overrides", nargs="*", help="evo_dfs config overrides for the trial part")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.part in ("trial", "both"):
        import torch

        torch.set_num_threads(args.threads)
        trial_part(args.limit, args.repeats, args.overrides)
    if args.part in ("machinery", "both"):
        machinery_part(args.trials, args.sqlite_params)


if __name__ == "__main__":
    main()
