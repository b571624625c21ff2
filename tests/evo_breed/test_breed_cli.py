"""`python -m evo_breed` as a user runs it: the zoo end to end, resume, kill -9 and resume (the
archive is kept), the real-model experiment on tiny stand-ins, and one-line failures."""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from evo_breed import Archive, place_for, split_slerp
from evo_breed._offers import offer_key, read_log

REPO_ROOT = Path(__file__).resolve().parents[2]
TASKS = ("en_math", "ja_qa")
SMALL = ["objective.search.limit=12", "objective.test.limit=10", "archive.init_merges=1", "archive.pop_size=5",
         *(f"objective.options.tasks.{t}.{s}.limit={n}" for t in TASKS for s, n in (("search", 12), ("test", 10)))]
STUDIES = ("breed_toy_ja_math-init", "breed_toy_ja_math")  # the phases, in the order offered
RESOURCES = ("acc_ja", "en_math.acc", "ja_qa.acc")


def cli_args(tmp_path: Path, *extra: str) -> list[str]:
    return [f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}", *SMALL, *extra]


def trials(tmp_path: Path, name: str, states=("COMPLETE",)) -> list:
    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    except KeyError:
        return []
    return sorted((t for t in study.trials if states is None or t.state.name in states), key=lambda t: t.number)


def count_complete(tmp_path: Path, name: str) -> int:
    """COMPLETE trials of study `name`, read straight from study.db while a run writes it (0 until
    its tables exist): opening it with Optuna would race the run's own schema creation."""
    db = tmp_path / "run" / "study.db"
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        try:
            return con.execute("select count(*) from trials join studies using (study_id) where study_name = ? "
                               "and state = 'COMPLETE'", (name,)).fetchone()[0]
        except sqlite3.OperationalError:  # no tables yet
            return 0


def state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "archive" / "state.json").read_text())


def offer_log(tmp_path: Path) -> list[tuple[str, int]]:
    """The study's offers, in the order recorded (evo_breed/_offers.py)."""
    return read_log(optuna.load_study(study_name=STUDIES[1], storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}"))


def replayed(tmp_path: Path, *, capacity: int = 5, alpha: float = 1.0) -> tuple[list[str], str]:
    """The archive that offering every trial of the study's offer log, in its order, gives:
    (member ids, champion)."""
    ids, rows, champion = [], [], (None, -1.0)
    complete = {(name, t.number): t for name in STUDIES for t in trials(tmp_path, name)}
    for key in offer_log(tmp_path):
        t = complete[key]
        scores = np.array([s for r in RESOURCES for s in t.user_attrs["item_scores"][r]], dtype=float)
        slot = place_for(np.array(rows).reshape(len(rows), -1), scores, alpha=alpha, capacity=capacity) if rows else 0
        member = t.user_attrs["breed"]["id"]
        if slot is not None and slot == len(rows):
            ids.append(member), rows.append(scores)
        elif slot is not None:
            ids[slot], rows[slot] = member, scores
        if t.values[0] > champion[1]:
            champion = (member, t.values[0])
    return ids, champion[0]


def check_archive(tmp_path: Path, *, n_trials: int, capacity: int = 5) -> None:
    """The archive on disk is what the study says, every trial offered exactly once."""
    saved = state(tmp_path)
    offered = {name: sorted(numbers) for name, numbers in saved["offered"].items()}
    assert offered == {name: [t.number for t in trials(tmp_path, name)] for name in STUDIES}
    log = offer_log(tmp_path)
    assert len(log) == len(set(log)) and set(log) == {(n, k) for n, numbers in offered.items() for k in numbers}
    ids, champion = replayed(tmp_path, capacity=capacity)
    assert [m["id"] for m in saved["members"]] == ids and saved["champion"]["id"] == champion
    # a trial killed while running FAILs and counts as finished: the budget is spent, not exceeded
    finished = sum(len(trials(tmp_path, name, states=("COMPLETE", "FAIL"))) for name in STUDIES)
    assert finished >= n_trials and sum(len(v) for v in offered.values()) <= n_trials
    Archive(tmp_path / "run" / "archive", capacity=capacity, alpha=1.0)  # opens: every member's file is there


def start_cli(tmp_path: Path, *extra: str, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evo_breed", *cli_args(tmp_path, *extra)], cwd=REPO_ROOT,
                            stdout=stdout, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_breeding_on_the_zoo_end_to_end_and_resumed(tmp_path, run_cli, error_line):
    out = run_cli("evo_breed", *cli_args(tmp_path, "n_trials=9")).stdout
    assert "archive 5 models, alpha 1, attraction, proportional selection, items of acc_ja + en_math.acc + " \
           "ja_qa.acc; 5 starting models, 4 children" in out, out[:2000]
    for row in ("| base |", "| ja |", "| math_wiz |", "| math_abel |", "| champion |"):
        assert row in out
    run = tmp_path / "run"
    init, children = trials(tmp_path, STUDIES[0]), trials(tmp_path, STUDIES[1])
    assert [t.user_attrs["breed"]["id"] for t in init] == ["base", "ja", "math_wiz", "math_abel", "u0"]
    assert len(children) == 4 and all(set(t.params) == {"split", "w"} for t in children)
    for t in children:  # the dashboard shows each child's parents, split and crossover
        info = t.user_attrs["breed"]
        assert info["id"] == f"c{t.number}" and len(info["parents"]) == 2 and info["crossover"] == "slerp"
        items = t.user_attrs["item_scores"]  # the multi-task objective: every task's per-item scores
        assert set(items) == {"acc", "acc_ja", "paper_acc", "paper_acc_ja", "en_math.acc", "en_math.acc_ja",
                              "en_math.paper_acc", "en_math.paper_acc_ja", "ja_qa.acc", "ja_qa.acc_ja"}
        assert {len(v) for v in items.values()} == {12}
    check_archive(tmp_path, n_trials=9)
    # the final line names the champion the table shows and the export saves, from whichever phase
    champion = state(tmp_path)["champion"]
    phase, number = champion["trial"]
    assert f"items), champion {champion['id']} of 9 scored models (trial {number} of {phase}):" in out, out[-2000:]

    model_dir = run / "best_model"
    champion = AutoModelForCausalLM.from_pretrained(model_dir)
    stored = load_file(run / "archive" / "champion.safetensors")
    for name, param in champion.named_parameters():
        torch.testing.assert_close(param, stored[name], rtol=0, atol=0)
    card = (model_dir / "README.md").read_text()
    assert f"champion {state(tmp_path)['champion']['id']}" in card and "## Lineage" in card
    assert json.loads((model_dir / "lineage.json").read_text())
    for name in ("lineage.png", "coverage.png", "history.png"):
        assert (run / name).stat().st_size > 1000, name

    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("evo_breed").experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert {"test.champion.acc_ja", "test.champion.en_math.acc", "test.champion.ja_qa.acc"} <= set(parent.data.metrics)
    assert {"lineage.png", "coverage.png", "state.json"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert len(runs) == 1 + 9  # one nested run per trial, both phases

    # a larger budget resumes: 2 more children, the archive continued from disk
    out = run_cli("evo_breed", *cli_args(tmp_path, "n_trials=11")).stdout
    assert len(trials(tmp_path, STUDIES[1])) == 6 and len(trials(tmp_path, STUDIES[0], states=None)) == 5
    check_archive(tmp_path, n_trials=11)
    # another breeding setup on the same study is refused in one line
    proc = run_cli("evo_breed", *cli_args(tmp_path, "n_trials=12", "archive.alpha=0"), ok=False)
    assert "archive" in error_line(proc) and "alpha" in error_line(proc)


@pytest.mark.slow
def test_kill_9_mid_run_keeps_the_archive(tmp_path):
    """SIGKILL while children are bred (mutation on: a lost child must be recomputed exactly), then
    the same command: every scored child is offered once and the archive is the one the study implies."""
    # 5 starting models and 8 children in an archive of 9: the first 4 children enter freely (their
    # parents stay, so their weights can be checked below), the later ones must evict
    n_trials, rng = 13, random.Random(3)
    args = (f"n_trials={n_trials}", "crossover.mutation_std=0.01", "archive.pop_size=9")
    with open(tmp_path / "runs.log", "a") as log:
        for kill in range(2):
            done = count_complete(tmp_path, STUDIES[1])
            proc = start_cli(tmp_path, *args, stdout=log)
            while count_complete(tmp_path, STUDIES[1]) < done + 2:
                assert proc.poll() is None, (tmp_path / "runs.log").read_text()[-3000:]
                time.sleep(0.05)
            time.sleep(rng.uniform(0, 0.6))  # within a trial, or between a trial's end and its offer
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            # as the kill left it: consistent, if behind the study by the last child at most
            saved = state(tmp_path)
            assert len(trials(tmp_path, STUDIES[1])) - len(saved["offered"].get(STUDIES[1], [])) <= 1
            Archive(tmp_path / "run" / "archive", capacity=9, alpha=1.0)
    final = start_cli(tmp_path, *args, stdout=subprocess.PIPE)
    out = final.communicate()[0]
    assert final.returncode == 0, out[-3000:]
    assert "| champion |" in out
    assert not trials(tmp_path, STUDIES[1], states=("RUNNING",))
    check_archive(tmp_path, n_trials=n_trials, capacity=9)

    # each child member's weights are its crossover, exactly (recomputed after a kill or not)
    members = {m["id"]: m for m in state(tmp_path)["members"]}
    order = [k for k, _ in AutoModelForCausalLM.from_pretrained(REPO_ROOT / "zoo" / "models" / "base").named_parameters()]
    checked = 0
    for t in trials(tmp_path, STUDIES[1]):
        info = t.user_attrs["breed"]
        if info["id"] in members and all(p in members for p in info["parents"]):
            a, b = (load_file(tmp_path / "run" / "archive" / "members" / f"{p}.safetensors") for p in info["parents"])
            want = split_slerp(a, b, order, split=info["split"], w=info["w"], mutation_std=0.01,
                               seed=zlib.crc32(f"0/{t.number}".encode()))
            got = load_file(tmp_path / "run" / "archive" / "members" / f"{info['id']}.safetensors")
            assert all(torch.equal(got[k], want[k]) for k in want), info["id"]
            checked += 1
    assert checked, "no child member with both parents still in the archive"


@pytest.mark.slow
def test_real_model_experiment_runs_on_local_stand_ins(tmp_path, run_cli, tiny_model_dirs, mgsm_ja_tsv, machine_paths):
    # `+experiment=ja_math` (three fine-tunes of one base, bf16, the paper's fitness, gen781's
    # tournament and attraction weight) with tiny models for the 7B ones, a local file for the hub
    # dataset and the CPU for CUDA
    from zoo import world

    search = tmp_path / "gsm8k_ja_stand_in.jsonl"
    search.write_text("".join(json.dumps({"question": q, "answer_number": a}, ensure_ascii=False) + "\n"
                              for q, a in world.task_items("ja_math", "search")[:6]), encoding="utf-8")
    out = run_cli(
        "evo_breed", "+experiment=ja_math", f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
        f"pool.base={tiny_model_dirs['base']}", f"pool.sources.shisa={tiny_model_dirs['src_a']}",
        f"pool.sources.wizardmath={tiny_model_dirs['src_b']}", f"pool.sources.abel={tiny_model_dirs['src_c']}",
        "pool.device=cpu", "torch_threads=1", "n_trials=10", "objective.options.max_new_tokens=6",
        f"objective.search={search}", "+objective.test.limit=4").stdout
    assert "archive 12 models, alpha 1, attraction (weight 0.7), tournament selection, items of acc_ja;" in out, out[-2000:]
    assert "8 starting models, 2 children" in out
    for row in ("| base |", "| shisa |", "| wizardmath |", "| abel |", "| champion |"):
        assert row in out, out[-2000:]
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "best_model").dtype == torch.bfloat16
    # the card, lineage and configs name the starting models, not this machine's paths
    assert machine_paths(tmp_path / "run" / "best_model", also=[tmp_path, tiny_model_dirs["base"].parent]) == {}
    assert "| shisa | `src_a` |" in (tmp_path / "run" / "best_model" / "README.md").read_text()


@pytest.mark.slow
def test_real_model_experiment_without_models_fails_fast(tmp_path, run_cli, error_line):
    proc = run_cli("evo_breed", "+experiment=ja_math", f"run_dir={tmp_path / 'run'}",
                   f"tracking.mlruns_dir={tmp_path / 'mlruns'}", ok=False, env={"HF_HUB_OFFLINE": "1"})
    line = error_line(proc)
    assert "mistralai/Mistral-7B-v0.1" in line or "shisa" in line, line
    assert not (tmp_path / "run" / "study.db").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("override, message", [
    ("helper=true tracking.storage=mysql://evo@db-host/optuna", "helper=true: evo_breed serialises its workers' "
                                                               "offers with a lock on a SQLite or PostgreSQL"),
    ("archive.selection=roulette", "archive.selection must be one of proportional, tournament"),
    ("n_trials=8", "n_trials (8) must exceed the 8 evaluations of the starting population"),
    ("sampler.kind=cmaes", "sampler.kind must stay random"),
    ("archive.alpha=-1", "archive.alpha must be >= 0"),
    ("crossover.method=cut", "crossover.method must be one of slerp, della, mixed; got 'cut'"),
    ("crossover.della_probability=1.5", "crossover.della_probability must be in [0, 1]; got 1.5"),
    ("crossover.della.density=[0.05,0.8]", "crossover.della.density +- epsilon must stay inside (0, 1); got "
                                           "density [0.05, 0.8], epsilon up to 0.15"),
    ("archive.pop_size=6", "archive.pop_size (6) is smaller than its 8 starting models (base, 3 sources, "
                           "4 uniform merges)"),
    ("+archive.size=3", "size"),
    ("archive.resources=[acc,nope]", "archive.resources: nope not a metric of objective 'multi_task'; known: acc, "
                                     "acc_ja, paper_acc, paper_acc_ja, en_math.acc, en_math.acc_ja, en_math.paper_acc, "
                                     "en_math.paper_acc_ja, ja_qa.acc, ja_qa.acc_ja"),
    ("objective.options.tasks.ja_qa.search.limit=7", "split 'search' has {'mgsm_ja': 50, 'en_math': 50, 'ja_qa': 7} "
                                                     "items per task; every task must score as many"),
    ("+objective.options.tasks.ja_qa.split=3", "task 'ja_qa' needs name, search, test"),
])
def test_bad_settings_are_one_line(tmp_path, cli_error, override, message):
    line = cli_error("evo_breed", f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
                     *override.split())
    assert message in line, line
    # refused before the study and the MLflow run exist (archive.resources: once the objective is built)
    assert not (tmp_path / "run" / "study.db").exists() and not (tmp_path / "mlruns").exists()


def test_della_on_sources_with_no_common_base_is_one_line(tmp_path, cli_error):
    # a model of the zoo's shape and tokenizer, freshly initialised: no fine-tune of the zoo's base
    from transformers import AutoConfig

    base = REPO_ROOT / "zoo" / "models" / "base"
    torch.manual_seed(0)
    stranger = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    stranger.save_pretrained(tmp_path / "stranger")
    for tokenizer_file in base.glob("tok*"):
        (tmp_path / "stranger" / tokenizer_file.name).write_bytes(tokenizer_file.read_bytes())
    line = cli_error("evo_breed", f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
                     "crossover.method=mixed", f"pool.sources.math_abel={tmp_path / 'stranger'}")
    assert "crossover DELLA takes task vectors against pool.base, but source 'math_abel' is no fine-tune of it" in line
    assert not (tmp_path / "run" / "study.db").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_a_child_scored_but_not_offered_before_a_kill_is_recomputed_exactly(tmp_path, run_cli):
    """The kill window between a child's COMPLETE and its offer, made on purpose: the study's offer
    log and the archive's state are put back to before the last offer (its file gone, as if the
    process died holding the weights); the same command then offers it from the study, recomputing
    the crossover (with mutation) from its parents: the same weights, the same archive, the same log
    as the uninterrupted run."""
    args = cli_args(tmp_path, "n_trials=8", "archive.pop_size=20", "crossover.mutation_std=0.01")
    run_cli("evo_breed", *args)
    root = tmp_path / "run" / "archive"
    done, log = state(tmp_path), offer_log(tmp_path)
    last = max(trials(tmp_path, STUDIES[1]), key=lambda t: t.number)
    assert log[-1] == (STUDIES[1], last.number)
    child = last.user_attrs["breed"]["id"]
    weights = load_file(root / "members" / f"{child}.safetensors")

    before = json.loads(json.dumps(done))
    before["members"] = [m for m in before["members"] if m["id"] != child]
    before["offered"][STUDIES[1]].remove(last.number)
    best = max(before["members"], key=lambda m: m["mean"])  # the first of equals, as the archive keeps it
    before["champion"] = next(m for m in before["members"] if m["mean"] == best["mean"])
    (root / "state.json").write_text(json.dumps(before))
    (root / "members" / f"{child}.safetensors").unlink()
    with contextlib.closing(sqlite3.connect(tmp_path / "run" / "study.db")) as con, con:
        assert con.execute("delete from study_user_attributes where key = ?", (offer_key(len(log) - 1),)).rowcount == 1

    run_cli("evo_breed", *args)  # nothing left to run: the offer is made again
    assert state(tmp_path) == done and offer_log(tmp_path) == log
    again = load_file(root / "members" / f"{child}.safetensors")
    assert all(torch.equal(again[k], weights[k]) for k in weights)


@pytest.mark.slow
def test_a_replica_behind_the_log_catches_up_by_replaying_it(tmp_path, run_cli):
    """A worker killed between recording its offer and updating its replica: the replica is
    behind the log; the same command replays the log, making the child's weights again."""
    args = cli_args(tmp_path, "n_trials=7", "archive.pop_size=20", "crossover.mutation_std=0.01")
    run_cli("evo_breed", *args)
    root = tmp_path / "run" / "archive"
    done = state(tmp_path)
    last = max(trials(tmp_path, STUDIES[1]), key=lambda t: t.number)
    child = last.user_attrs["breed"]["id"]
    weights = load_file(root / "members" / f"{child}.safetensors")
    before = json.loads(json.dumps(done))
    before["members"] = [m for m in before["members"] if m["id"] != child]
    before["offered"][STUDIES[1]].remove(last.number)
    (root / "state.json").write_text(json.dumps(before))
    (root / "members" / f"{child}.safetensors").unlink()

    run_cli("evo_breed", *args)
    assert state(tmp_path) == done
    assert all(torch.equal(load_file(root / "members" / f"{child}.safetensors")[k], weights[k]) for k in weights)
