"""`python -m evo_genome` as a user runs it on the LoRA zoo: end to end (trials, MLflow, table,
exports), the exported adapter loaded by peft alone, the ensemble answering through its command,
resume, and kill -9 at any moment with nothing lost and nothing scored twice."""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import time
import unicodedata
from pathlib import Path

import optuna
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ZOO_BASE = REPO_ROOT / "zoo" / "models" / "base"
EXPERTS = ("add_en", "sub_en", "abel_en", "count_ja", "qa_ja", "counter_ja")
SMALL = ("genome.population=4", "+objective.search.limit=16", "+objective.test.limit=12")
STUDY = "genome_lora"


def cli_args(tmp_path: Path, *extra: str, run: str = "run") -> list[str]:
    return [f"run_dir={tmp_path / run}", f"tracking.mlruns_dir={tmp_path / run / 'mlruns'}", *SMALL, *extra]


def trials(tmp_path: Path, run: str = "run", states=("COMPLETE",)) -> list:
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / run / 'study.db'}")
    return sorted((t for t in study.trials if states is None or t.state.name in states), key=lambda t: t.number)


def lineage(tmp_path: Path, run: str = "run") -> list[tuple[str, float]]:
    """Each COMPLETE trial's individual (generation, stage, slot, operator, parents, t) and score."""
    return [(json.dumps(t.user_attrs["genome"], sort_keys=True), t.values[0]) for t in trials(tmp_path, run)]


# peft, transformers and torch only: `python -S` (no site, so the editable install stays off) with
# the interpreter's site-packages appended, from a temp cwd
ISOLATED = r"""
import json, sys
sys.path.append(sys.argv[1])
for module in ("evo_core", "evo_genome", "objectives", "zoo"):
    try:
        __import__(module)
        sys.exit(f"{module} must not be importable here")
    except ImportError:
        pass
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(1)
tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sys.argv[2]), sys.argv[3]).eval()
outputs = []
for question in json.loads(sys.argv[4]):
    ids = tokenizer("Q: " + question + "\nA:", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=40, do_sample=False)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    for stop in ("\nQ:", "\n\n"):
        text = text.split(stop)[0]
    outputs.append(text)
print(json.dumps(outputs))
"""


def peft_alone(adapter: Path, questions: list[str], cwd: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-S", "-c", ISOLATED, sysconfig.get_paths()["purelib"], str(ZOO_BASE),
                           str(adapter), json.dumps(questions)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_genome_plus_on_the_zoo_end_to_end(tmp_path, run_cli, error_line, machine_paths):
    out = run_cli("evo_genome", *cli_args(tmp_path, "n_trials=12", "genome.iterations=2")).stdout
    assert "genome  GENOME+: N=4, K=2, operators crossover, mutation, selection, succession, ensemble; budget 12" in out
    for row in ("base", *EXPERTS, "uniform average", "ensemble top-3", "best individual"):
        assert f"| {row} |" in out, out[-3000:]
    run = tmp_path / "run"
    done = trials(tmp_path)
    assert len(done) == 12
    for t in done:  # the dashboard shows how each individual was made
        g = t.user_attrs["genome"]
        assert {"generation", "stage", "slot", "operator", "parents"} <= set(g), g
        if g["operator"] in ("init", "crossover"):
            assert len(g["parents"]) == 2 and 0 <= g["t"] <= 1
    assert [t.user_attrs["genome"]["stage"] for t in done[:4]] == ["init"] * 4
    assert all(set(t.user_attrs["genome"]["parents"]) <= set(EXPERTS) for t in done[:4])
    later = [p for t in done[4:] for p in t.user_attrs["genome"]["parents"]]
    names = {t.user_attrs["genome"]["name"] for t in done}
    assert later and set(later) <= names  # parents of later individuals: earlier individuals, by name

    # every population to MLflow: fitness mean/max/min and diversity by generation, and the plot
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{run / 'mlruns' / 'mlflow.db'}")
    [parent] = [r for r in client.search_runs([client.get_experiment_by_name("evo_genome").experiment_id])
                if "mlflow.parentRunId" not in r.data.tags]
    for metric in ("fitness_mean", "fitness_max", "fitness_min", "diversity"):
        history = client.get_metric_history(parent.info.run_id, f"population.{metric}")
        assert [m.step for m in history] == list(range(len(history))) and len(history) >= 2, metric
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"generations.png", "history.png"} <= artifacts
    assert (run / "generations.png").stat().st_size > 1000

    # the best individual as a PEFT adapter folder, loaded by peft alone: the outputs the search scored
    model_dir, ensemble = run / "best_model", run / "ensemble"
    assert json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == "base"
    assert machine_paths(model_dir, also=[tmp_path]) == {} and machine_paths(ensemble, also=[tmp_path]) == {}
    samples = [json.loads(line) for line in (run / "samples" / "samples.jsonl").read_text().splitlines()]
    assert peft_alone(model_dir, [s["question"] for s in samples], tmp_path) == [s["output"] for s in samples]

    # the ensemble: a manifest and its members' folders; its command answers as the table scored it
    manifest = json.loads((ensemble / "manifest.json").read_text())
    assert [m["adapter"] for m in manifest["members"]] == ["member-1", "member-2", "member-3"]
    assert manifest["vote"]["rule"] == "majority"
    from zoo import lora_world
    items = lora_world.task_items("lora_add_and_count", "test")[:12]
    answered = run_cli("evo_genome.answer", str(ensemble / "manifest.json"), "--base", str(ZOO_BASE),
                       *(q for q, _ in items)).stdout.splitlines()
    assert len(answered) == 12
    pattern = re.compile(manifest["vote"]["answer_pattern"])

    def right(output: str, gold: str) -> bool:
        found = pattern.findall(unicodedata.normalize("NFKC", output.replace("\\n", "\n")).strip())
        return bool(found) and unicodedata.normalize("NFKC", found[-1]).strip() == gold
    table = json.loads((run / "test_table.json").read_text())
    assert sum(right(o, gold) for o, (_, gold) in zip(answered, items)) / 12 == pytest.approx(
        table["ensemble top-3"]["acc"])
    members = [peft_alone(ensemble / f"member-{k}", [q for q, _ in items[:4]], tmp_path) for k in (1, 2, 3)]
    assert all(a.replace("\\n", "\n") in outs for a, outs in zip(answered, zip(*members)))

    # a larger budget resumes where it stopped; another setting on the same study is refused
    run_cli("evo_genome", *cli_args(tmp_path, "n_trials=16", "genome.iterations=5"))  # K: a stopping rule too
    assert [json.loads(k) for k, _ in lineage(tmp_path)][:12] == [t.user_attrs["genome"] for t in done]
    assert len(trials(tmp_path)) == 16 and not trials(tmp_path, states=("FAIL", "RUNNING"))
    proc = run_cli("evo_genome", *cli_args(tmp_path, "n_trials=20", "genome.sigma=0.01"),
                   ok=False)
    assert "was run with" in error_line(proc) and "sigma" in error_line(proc)


def count_complete(db: Path) -> int:
    """COMPLETE trials, read straight from study.db while a run writes it (0 until its tables exist)."""
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        try:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


@pytest.mark.slow
def test_kill_9_mid_generation_loses_nothing_and_scores_nothing_twice(tmp_path, run_cli):
    """SIGKILL a real run twice at random moments (mid-trial or between trials, mid-generation),
    rerun the same command: the trials are exactly those of an uninterrupted run, in order."""
    args = ("n_trials=14", "genome.iterations=3", "table_baselines=false")
    run_cli("evo_genome", *cli_args(tmp_path, *args, run="reference"))
    reference = lineage(tmp_path, "reference")
    assert len(reference) == 14
    db, rng = tmp_path / "run" / "study.db", random.Random(5)
    with open(tmp_path / "runs.log", "a") as log:
        for _ in range(2):
            done = count_complete(db)
            proc = subprocess.Popen([sys.executable, "-m", "evo_genome", *cli_args(tmp_path, *args)], cwd=REPO_ROOT,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
            while count_complete(db) < done + 3:
                assert proc.poll() is None, (tmp_path / "runs.log").read_text()[-3000:]
                time.sleep(0.05)
            time.sleep(rng.uniform(0, 0.5))  # within a trial, or between one and the next
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    run_cli("evo_genome", *cli_args(tmp_path, *args), new_process=True)
    assert lineage(tmp_path) == reference  # nothing lost, nothing scored twice, the same individuals
    assert not trials(tmp_path, states=("RUNNING",))
    killed = trials(tmp_path, states=("FAIL",))
    assert all("fail_reason" not in t.user_attrs for t in killed) and len(killed) <= 2
    assert (tmp_path / "run" / "best_model" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_the_baseline_modes_experts_and_lorahub_mixing(tmp_path, run_cli):
    """mode=experts scores each expert and their uniform average, and reports the best single
    expert; mode=mixing searches one weight per expert by CMA-ES and exports that mixture."""
    out = run_cli("evo_genome", "+experiment=experts", *cli_args(tmp_path, run="experts")).stdout
    study = optuna.load_study(study_name="genome_experts_lora",
                              storage=f"sqlite:///{tmp_path / 'experts' / 'study.db'}")
    scored = {t.user_attrs["expert"]["name"]: t.values[0] for t in study.trials if t.state.name == "COMPLETE"}
    assert list(scored) == [*EXPERTS, "uniform average"]
    best = max(EXPERTS, key=lambda e: (scored[e], -EXPERTS.index(e)))
    assert f"best expert {best} of 6 on the search split" in out and "| best expert |" in out

    from safetensors.torch import load_file

    from evo_genome import read_adapter
    run_cli("evo_genome", "+experiment=mixing", "n_trials=4", *cli_args(tmp_path, "table_baselines=false", run="mix"))
    study = optuna.load_study(study_name="genome_mixing_lora", storage=f"sqlite:///{tmp_path / 'mix' / 'study.db'}")
    assert len(study.trials) == 4 and set(study.trials[0].params) == {f"w_{e}" for e in EXPERTS}
    assert study.trials[0].params == pytest.approx({f"w_{e}": 1 / 6 for e in EXPERTS})  # from the uniform average
    best = study.best_trial
    experts = {e: read_adapter(REPO_ROOT / "zoo" / "models" / "lora" / e).weights for e in EXPERTS}
    exported = load_file(tmp_path / "mix" / "best_model" / "adapter_model.safetensors")
    for key, tensor in exported.items():
        want = sum(best.params[f"w_{e}"] * experts[e][key] for e in EXPERTS)
        assert (tensor - want).abs().max() < 1e-6, key
