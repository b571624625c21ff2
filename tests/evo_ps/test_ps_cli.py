"""`python -m evo_ps` as a user runs it: the default study on the zoo, resume, kill and resume,
reproducibility, and fast one-line failures for bad input."""
from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from transformers import AutoModelForCausalLM

from evo_core import best_trial

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = ["objective.search.limit=20", "+objective.test.limit=40", "merge=task_arithmetic",
         "space.warm_start_trials=2"]


def cli_args(tmp_path: Path, *extra: str) -> list[str]:
    return [f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}", *SMALL, *extra]


def study(tmp_path: Path, name: str = "toy_ja_math") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")


PHASES = ("toy_ja_math-uniform", "toy_ja_math")  # the studies of a run with a warm start


def start_cli(tmp_path: Path, *extra: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    """`python -m evo_ps` on cli_args, in the background (stdout: a pipe, or an open file)."""
    return subprocess.Popen([sys.executable, "-m", "evo_ps", *cli_args(tmp_path, *extra)], cwd=REPO_ROOT,
                            stdout=stdout, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1",
                                 "PYTHONUNBUFFERED": "1"})  # a killed run's output is all there


def count_trials(tmp_path: Path, *, studies: tuple[str, ...] = ("toy_ja_math",),
                 states: tuple[str, ...] | None = ("COMPLETE", "FAIL", "PRUNED"), user_attr: str | None = None) -> int:
    """Trials of `studies` in `states` (None: any, RUNNING and WAITING too), and with user attribute
    `user_attr` if given, read straight from study.db while workers write it (0 until its tables
    exist); cheap enough to poll."""
    db = tmp_path / "run" / "study.db"
    if not db.exists():
        return 0
    states = states or ("RUNNING", "WAITING", "COMPLETE", "FAIL", "PRUNED")
    marks = lambda values: ", ".join("?" * len(values))  # noqa: E731
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        try:
            with_attr = (" join trial_user_attributes using (trial_id)", " and key = ?", (user_attr,)) if user_attr \
                else ("", "", ())
            return con.execute(f"select count(*) from trials join studies using (study_id){with_attr[0]} where "
                               f"study_name in ({marks(studies)}) and state in ({marks(states)}){with_attr[1]}",
                               (*studies, *states, *with_attr[2])).fetchone()[0]
        except sqlite3.OperationalError:  # no tables yet
            return 0


def wait_for(proc: subprocess.Popen, condition) -> None:
    """Poll until `condition()` holds; the process must still be running then (pytest-timeout bounds it)."""
    while not condition():
        assert proc.poll() is None, f"the process ended ({proc.returncode}) before the awaited moment"
        time.sleep(0.2)


def trial_run_metrics(tmp_path: Path) -> dict[str, dict[str, float]]:
    """The metrics of every nested (per-trial) MLflow run of the study, by run name."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("evo_ps").experiment_id], max_results=100)
    return {r.info.run_name: r.data.metrics for r in runs if "mlflow.parentRunId" in r.data.tags}


def check_mlflow(tmp_path: Path, studies: tuple[str, ...] = PHASES) -> None:
    """One parent run; every finished trial of every phase study has exactly one nested run."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("evo_ps").experiment_id], max_results=5000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert {r.data.tags["mlflow.parentRunId"] for r in nested} == {parents[0].info.run_id}
    names = sorted(r.info.run_name for r in nested)
    assert len(set(names)) == len(names), f"a trial was logged twice: {names}"
    for name in studies:
        logged = sorted(r.info.run_name for r in nested if r.data.tags["study"] == name)
        finished = [f"{name}/trial-{t.number:04d}" for t in study(tmp_path, name).trials if t.state.is_finished()]
        assert logged == finished, name


@pytest.mark.slow
def test_default_study_end_to_end(tmp_path, run_cli):
    proc = run_cli("evo_ps", *cli_args(tmp_path, "n_trials=4"))
    out = proc.stdout
    assert f"optuna-dashboard sqlite:///{tmp_path / 'run' / 'study.db'}" in out
    assert "mlflow  run " in out and "mlflow ui --backend-store-uri sqlite:///" in out
    for row in ("| base |", "| ja |", "| math_wiz |", "| math_abel |", "| best_uniform |", "| best_merge |"):
        assert row in out
    assert out.count("trial ") >= 4
    model_dir = tmp_path / "run" / "best_model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.num_hidden_layers == 4
    for name in ("mergekit_config.yml", "README.md"):
        assert (model_dir / name).is_file()
    for name in ("history.png", "layer_params.png"):
        assert (tmp_path / "run" / name).stat().st_size > 1000

    # MLflow: one parent run with the test table, one nested run per trial
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("evo_ps")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and "test.best_merge.acc_ja" in parents[0].data.metrics
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    studies = sorted(r.data.tags["study"] for r in nested)
    assert studies == ["toy_ja_math"] * 4 + ["toy_ja_math-uniform"] * 2  # warm start, then per layer
    assert all({"acc", "acc_ja", "merge_seconds", "eval_seconds"} <= set(r.data.metrics)
                                    for r in nested)

    # the same command with a larger budget resumes: the 4 trials are kept, 2 more run
    before = [t.params for t in study(tmp_path).trials]
    proc = run_cli("evo_ps", *cli_args(tmp_path, "n_trials=6"))
    after = study(tmp_path).trials
    assert len(after) == 6 and [t.params for t in after[:4]] == before
    assert proc.stdout.count("trial ") >= 2 and parents[0].info.run_id in proc.stdout


@pytest.mark.slow
def test_racing_study_end_to_end(tmp_path, run_cli):
    # evaluation=racing on the zoo: 20 search items in blocks of 8, 6, 6; every trial says how many
    # items it used and what it generated (dashboard: user attrs; MLflow: nested-run metrics, summed
    # over the trial's blocks), the best is a fully scored trial, the table is on the whole test split
    # (confidence and tolerance loosened: on 8 items the default ones decide nothing)
    proc = run_cli("evo_ps", *cli_args(tmp_path, "evaluation=racing", "evaluation.first_block=8", "evaluation.block=6",
                                       "evaluation.confidence=0.5", "evaluation.tolerance=0.1",
                                       "space.warm_start_trials=8", "n_trials=12"))
    assert "| best_merge |" in proc.stdout and "test split (40 items)" in proc.stdout
    trials = [t for name in PHASES for t in study(tmp_path, name).trials]
    assert len(trials) == 20 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        n = t.user_attrs["n"]
        assert n in (8, 14, 20) and t.user_attrs["partial"] == (n < 20) and t.user_attrs["race"] in ("full", "in", "out")
        assert len(t.user_attrs["item_scores"]["acc_ja"]) == n and t.user_attrs["generated_tokens"] > 0
    assert {t.user_attrs["race"] for t in trials} > {"full"}, "racing stopped no trial early"
    best = best_trial(study(tmp_path))
    assert not best.user_attrs["partial"] and f"(trial {best.number})" in proc.stdout
    check_mlflow(tmp_path)
    by_name = trial_run_metrics(tmp_path)
    for name in PHASES:
        for t in study(tmp_path, name).trials:
            metrics = by_name[f"{name}/trial-{t.number:04d}"]
            assert metrics["n"] == t.user_attrs["n"] and metrics["generated_tokens"] == t.user_attrs["generated_tokens"]
            assert metrics["partial"] == float(t.user_attrs["partial"])


@pytest.mark.slow
def test_multi_fidelity_study_end_to_end(tmp_path, run_cli):
    # evaluation=multi_fidelity on the zoo: the likelihood of 8 search items' answers screens each
    # generation, its best is generated on all 20; every trial says which fidelities ran and what
    # they cost (dashboard: user attrs; MLflow: nested-run metrics); the best is fully evaluated
    proc = run_cli("evo_ps", *cli_args(tmp_path, "evaluation=multi_fidelity", "evaluation.cheap=likelihood",
                                       "evaluation.cheap_items=8",
                                       "space.warm_start_trials=8", "n_trials=12"))
    assert "| best_merge |" in proc.stdout and "test split (40 items)" in proc.stdout
    trials = [t for name in PHASES for t in study(tmp_path, name).trials]
    assert len(trials) == 20 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        ran = t.user_attrs["fidelities"]
        assert ran in (["likelihood"], ["likelihood", "full"]) and t.user_attrs["partial"] == (ran == ["likelihood"])
        assert t.user_attrs["cheap_tokens"] > 0 and t.user_attrs["cheap_value"] < 0
        if not t.user_attrs["partial"]:
            assert t.user_attrs["n"] == 20 and t.user_attrs["generated_tokens"] > 0
    assert 2 < sum(not t.user_attrs["partial"] for t in trials) < 20
    for name in PHASES:
        assert -1 <= study(tmp_path, name).user_attrs["fidelity_correlation"] <= 1
    best = best_trial(study(tmp_path))
    assert not best.user_attrs["partial"] and f"(trial {best.number})" in proc.stdout
    by_name = trial_run_metrics(tmp_path)
    for name in PHASES:
        for t in study(tmp_path, name).trials:
            metrics = by_name[f"{name}/trial-{t.number:04d}"]
            assert metrics["cheap_value"] == pytest.approx(t.user_attrs["cheap_value"])
            assert metrics["cheap_seconds"] > 0 and metrics["partial"] == float(t.user_attrs["partial"])


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(model_dir / "model.safetensors")


def same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_same_seed_same_result(tmp_path, run_cli):
    results = []
    for sub in ("a", "b"):
        run_cli("evo_ps", *cli_args(tmp_path / sub, "n_trials=3", "merge=dare_ties"))
        s = study(tmp_path / sub)
        results.append((s.best_trial.params, s.best_value, [t.values for t in s.trials]))
    assert results[0] == results[1]
    assert same_bits(weights(tmp_path / "a" / "run" / "best_model"), weights(tmp_path / "b" / "run" / "best_model"))

    # what the card of a random-drop merge promises: the YAML rebuilds the recipe in distribution
    # only, and the same command on the same run_dir writes the scored model again, to the bit
    model_dir = tmp_path / "a" / "run" / "best_model"
    card = (model_dir / "README.md").read_text()
    best = study(tmp_path / "a").best_trial.number
    assert "rebuilds this recipe only in distribution" in card and f"drops with seed {best}" in card
    scored = weights(model_dir)
    run_cli("evo_ps", *cli_args(tmp_path / "a", "n_trials=3", "merge=dare_ties"))
    assert len(study(tmp_path / "a").trials) == 3  # no trial ran
    assert same_bits(weights(model_dir), scored)


@pytest.mark.slow
def test_killed_study_resumes(tmp_path):
    proc = start_cli(tmp_path, "n_trials=8", stdout=subprocess.DEVNULL)
    wait_for(proc, lambda: count_trials(tmp_path, states=("COMPLETE",)) >= 3)  # kill it once 3 trials are finished
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = {t.number: t.params for t in study(tmp_path).trials if t.state.name == "COMPLETE"}
    assert 3 <= len(kept) < 8

    assert start_cli(tmp_path, "n_trials=8", stdout=subprocess.DEVNULL).wait() == 0
    trials = study(tmp_path).trials
    assert {t.number: t.params for t in trials if t.number in kept} == kept
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) >= 8 and (tmp_path / "run" / "best_model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_racing_study_killed_mid_generation_resumes(tmp_path):
    # killed while a generation races (its trials RUNNING): the restart waits for their heartbeat
    # to go stale, races the retries at the killed points as that generation, and finishes
    racing = ("evaluation=racing", "evaluation.first_block=8", "evaluation.block=6", "n_trials=8")
    proc = start_cli(tmp_path, *racing, stdout=subprocess.DEVNULL)
    # killed once a generation (2+ trials) is asked and every trial of it has its point stored,
    # i.e. while it races, which takes about a second (no fixed sleep: with fast generation a
    # race can end within one)
    wait_for(proc, lambda: 2 <= count_trials(tmp_path, states=("RUNNING",), user_attr="point")
             == count_trials(tmp_path, states=("RUNNING",)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = {t.number: t for t in study(tmp_path).trials if t.state.name == "RUNNING"}
    assert len([t for t in killed.values() if "point" in t.user_attrs]) >= 2

    assert start_cli(tmp_path, *racing, stdout=subprocess.DEVNULL).wait() == 0
    trials = study(tmp_path).trials
    retries = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    assert set(retries) == set(killed) and all(t.state.name == "COMPLETE" for t in retries.values())
    for number, retry in retries.items():
        assert retry.params == killed[number].user_attrs.get("point", retry.params)
        assert retry.system_attrs["cma:generation"] == killed[number].system_attrs["cma:generation"]
    assert len([t for t in trials if t.state.is_finished()]) >= 8
    assert not best_trial(study(tmp_path)).user_attrs["partial"]
    assert (tmp_path / "run" / "best_model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path):
    # a helper started first waits for the primary, then both search one study; the primary waits
    # for the helper's last trial and writes the final result alone. No step depends on the
    # machine's speed: the primary starts once the helper says it is waiting, the helper waits as
    # long as the test may run (pytest-timeout bounds it)
    helper = start_cli(tmp_path, "n_trials=16", "helper=true", "helper_wait_minutes=120")
    helper_out = []
    for line in helper.stdout:  # until the helper is waiting for its primary
        helper_out.append(line)
        if line.startswith("helper  joining"):
            break
    primary = start_cli(tmp_path, "n_trials=16")
    outputs = {"helper": "".join(helper_out) + helper.communicate()[0], "primary": primary.communicate()[0]}
    assert helper.returncode == 0, outputs["helper"][-3000:]
    assert primary.returncode == 0, outputs["primary"][-3000:]
    assert "helper  done" in outputs["helper"] and "| best_merge |" not in outputs["helper"]
    assert "| best_merge |" in outputs["primary"]

    trials = [t for t in study(tmp_path).trials if t.state.is_finished()]
    assert 16 <= len(trials) <= 17  # a worker stops at 16 finished; the other's running trial may add one
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, workers
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials), "a sample was proposed twice"
    best = best_trial(study(tmp_path))  # over both workers' trials: the primary waited for the helper's
    card = (tmp_path / "run" / "best_model" / "README.md").read_text()
    assert f"(trial {best.number}," in card, card[:300]

    check_mlflow(tmp_path)


@pytest.mark.slow
def test_paper_experiment_runs_on_local_stand_ins(tmp_path, run_cli, tiny_model_dirs, mgsm_ja_tsv, machine_paths):
    # `+experiment=ja_math` as the paper has it (bf16, DARE-TIES per layer, CMA-ES from x0 = 0.5,
    # the Japanese CoT prompt and stop strings, search set read by the `hf` source, test = MGSM-JA)
    # with only what can't exist here replaced: tiny models for the 7B ones, a local JSON file in
    # the search set's columns (question, answer_number) for the hub dataset, the CPU for CUDA
    import json

    from zoo import world

    search = tmp_path / "gsm8k_ja_stand_in.jsonl"
    search.write_text("".join(json.dumps({"question": q, "answer_number": a}, ensure_ascii=False) + "\n"
                              for q, a in world.task_items("ja_math", "search")[:8]), encoding="utf-8")
    proc = run_cli(
        "evo_ps", "+experiment=ja_math", f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
        f"pool.base={tiny_model_dirs['base']}", f"pool.sources.shisa={tiny_model_dirs['src_a']}",
        f"pool.sources.wizardmath={tiny_model_dirs['src_b']}", f"pool.sources.abel={tiny_model_dirs['src_c']}",
        "pool.device=cpu", "torch_threads=1", "n_trials=3", "objective.options.max_new_tokens=6",
        f"objective.search={search}",  # a local file in place of the hub dataset
        "+objective.test.limit=5")
    out = proc.stdout
    assert "space   36 parameters" in out  # (4 layers + embed + head) x 3 sources x 2
    for row in ("| base |", "| shisa |", "| wizardmath |", "| abel |", "| best_merge |"):
        assert row in out, out[-2000:]
    assert "| best_uniform |" not in out  # the paper's run starts CMA-ES at x0 = 0.5, no warm start
    trials = optuna.load_study(study_name="ja_math", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}").trials
    # the paper's first trial is x0 = 0.5 everywhere; CMA-ES proposes every trial after it
    assert len(trials) == 3 and set(trials[0].params.values()) == {0.5}
    assert all("cma:generation" in t.system_attrs for t in trials[1:])
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "best_model")
    assert model.dtype == torch.bfloat16
    recipe = (tmp_path / "run" / "best_model" / "mergekit_config.yml").read_text()
    assert "merge_method: dare_ties" in recipe and "dtype: bfloat16" in recipe
    # what is published names the models, not this machine's paths (the MLflow copies of the card
    # and YAML too); the runnable YAML with the paths stays beside best_model/
    assert machine_paths(tmp_path / "run" / "best_model", also=[tmp_path, tiny_model_dirs["base"].parent]) == {}
    assert machine_paths(tmp_path / "mlruns", also=[tmp_path, tiny_model_dirs["base"].parent]) == {}
    assert "base_model: base\n" in recipe and "- model: src_a\n" in recipe
    local = (tmp_path / "run" / "mergekit_config.local.yml").read_text()
    assert f"base_model: {tiny_model_dirs['base']}\n" in local and f"- model: {tiny_model_dirs['src_a']}\n" in local


@pytest.mark.slow
def test_paper_experiment_without_models_fails_fast(tmp_path, run_cli, error_line):
    proc = run_cli("evo_ps", "+experiment=ja_math", f"run_dir={tmp_path / 'run'}",
                   f"tracking.mlruns_dir={tmp_path / 'mlruns'}", ok=False,
                   env={"HF_HUB_OFFLINE": "1"})
    line = error_line(proc)
    assert "mistralai/Mistral-7B-v0.1" in line or "shisa" in line, line
    assert not (tmp_path / "run" / "study.db").exists() and not (tmp_path / "mlruns").exists()


def test_bad_input_from_the_command_line_is_one_line(tmp_path, run_cli, error_line):
    proc = run_cli("evo_ps", f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}", "+foo=1",
                   ok=False)
    assert "foo" in error_line(proc)
    assert not (tmp_path / "run" / "study.db").exists()


@pytest.mark.parametrize("override, message", [
    ("space.granularity=3", "granularity 3 must divide the 4 layers"),
    ("merge=slerp", "slerp"),
    ("+space.bounds.density=[0,2]", "density bounds must lie in [0, 1]"),
    ("pool.base=/nonexistent/model", "/nonexistent/model"),
    ("objective.search.limit=0", "limit"),
    ("objective.search=/nonexistent/gsm8k_ja.jsonl", "split 'search': data file not found: /nonexistent/gsm8k_ja.jsonl"),
    ("objective.test=/tmp/mgsm.txt", "split 'test': a data file must end in .tsv"),
    ("sampler.sigma0=-1", "sigma0"),
    ("sampler.kind=nosuch", "unknown sampler 'nosuch'; known: cmaes, nsga2, random, tpe"),
    ("sampler.popsize=1", "sampler.popsize must be >= 2; got 1"),
    ("sampler.popsize=3", "sampler.popsize must be >= 4 with sampler.kind=cmaes (it recombines the best half: with 3 "
                          "that is one candidate, and cmaes divides by zero in its weights); got 3"),
    ("merge.method=nosuch", "unknown merge method 'nosuch'; known: breadcrumbs,"),
    ("+objective.options.answer_pattern=x", "objective 'mgsm_ja' has no option answer_pattern"),
    ("evaluation.kind=halving", "evaluation.kind must be full, racing or multi_fidelity; got 'halving'"),
])
def test_bad_input_is_one_line_error(tmp_path, cli_error, override, message):
    line = cli_error("evo_ps", f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}", override)
    assert message in line
    assert not (tmp_path / "run" / "study.db").exists()
