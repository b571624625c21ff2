"""`python -m evo_dfs` end to end: the composed configs (shared groups, DFS experiments), one-line
errors for bad configs and missing models before any study exists, and tiny searches on the zoo
(slow): printed storage / dashboard / MLflow lines, the MLflow record, the table, the exported
path loading and scoring as searched, resume without redoing trials, genome + W-net, NSGA-II."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from evo_core import register_resolvers
from evo_core import unpack_genome
from evo_dfs import DFSSpace, SlotLayout
from evo_dfs._config import validate
from evo_dfs._search import check_sources, dfs_space

register_resolvers()

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf" / "dfs"
ZOO = REPO_ROOT / "zoo" / "models"
TINY = ["objective.search.limit=12", "+objective.test.limit=20"]  # problems per trial / in the table
TRIAL_LINE = re.compile(r"^trial +(\d+) ", re.M)

# loads an exported path with trust_remote_code and scores it on the test split the CLI used
SCORE_EXPORT = r"""
import json, sys, torch
torch.set_num_threads(1)
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM, AutoTokenizer
import zoo  # registers the objectives and the zoo's data source
from evo_core import build_objective, register_resolvers
from evo_dfs._config import validate
register_resolvers()
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)  # config.json has an auto_map
with initialize_config_dir(config_dir=sys.argv[2], version_base="1.3"):
    cfg = validate(compose("config", overrides=json.loads(sys.argv[3])))
objective = build_objective(cfg.objective, tokenizer, splits=("test",))
print(json.dumps({"class": type(model).__name__, "path_layers": model.config.path_layers,
                  "path_scales": model.config.path_scales, **objective.score(model, "test"),
                  "output": objective.generate(model, "test")[0]}))
"""


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def env(tmp_path: Path) -> dict[str, str]:
    # no hub: a missing model must fail at once; remote-code modules of the export in tmp
    return {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}


def dfs(run_cli, tmp_path: Path, *overrides: str, ok: bool = True):
    """`python -m evo_dfs` with run dir and MLflow store in tmp_path (conftest's run_cli: one thread)."""
    return run_cli("evo_dfs", f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
                   *overrides, ok=ok, env=env(tmp_path))


def trial_numbers(stdout: str) -> list[int]:
    return [int(n) for n in TRIAL_LINE.findall(stdout)]


# ---- configs -------------------------------------------------------------------------------------------

def test_default_is_the_zoo_search_with_the_shared_groups():
    cfg = validate(composed())
    assert list(cfg.pool.sources.items()) == [("ja", str(ZOO / "ja")), ("math_wiz", str(ZOO / "math_wiz"))]
    # the objective group is evo_ps's own file, not a copy
    shared = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "conf" / "objective" / "zoo_ja_math.yaml"))
    assert OmegaConf.to_container(OmegaConf.structured(cfg.objective)) == shared
    assert (cfg.sampler.kind, cfg.space.encoding, cfg.tracking.experiment) == ("cmaes", "params", "evo_dfs")
    assert cfg.study_name == "dfs_toy_ja_math" and cfg.run_dir == str(REPO_ROOT / "outputs" / "dfs_toy_ja_math-seed0")
    assert validate(composed("+experiment=toy_ja_math")) == cfg


def test_experiments_are_the_dfs_ones():
    hybrid = validate(composed("+experiment=toy_hybrid"))
    assert list(hybrid.pool.sources) == ["ps_merge", "ja"]
    assert hybrid.pool.sources["ps_merge"] == str(REPO_ROOT / "outputs" / "toy_ja_math-seed0" / "best_model")
    paper = validate(composed("+experiment=ja_math"))  # conf/experiment/ja_math.yaml is evo_ps's
    assert list(paper.pool.sources.values()) == ["augmxnt/shisa-gamma-7b-v1", "WizardLMTeam/WizardMath-7B-V1.1"]
    assert (paper.space.repeats, paper.space.scales, paper.space.encoding) == (3, "matrix", "genome")
    assert (paper.sampler.popsize, paper.sampler.separable, paper.pool.dtype, paper.pool.device) == \
        (128, True, "bfloat16", "cuda")
    assert paper.objective.name == "mgsm_ja" and paper.n_trials == 1 + 100 * 128


@pytest.mark.parametrize("override, message", [
    ("space.repeats=0", "space.repeats must be >= 1; got 0"),
    ("+space.repeat=2", "bad config: Key 'repeat' not in 'SpaceConfig' (at space.repeat)"),
    ("space.scales=diagonal", "unknown space.scales 'diagonal'; known: matrix, wnet"),
    ("minimize=[path_length]", "sampler 'cmaes' optimises one (use sampler=nsga2)"),
    ("sampler=nsga2 minimize=[speed]", "minimize: unknown ['speed']"),
    ("sampler=tpe space.encoding=genome", "space.encoding=genome drives CMA-ES itself"),
    ("space.encoding=genome +evaluation=racing", "space.encoding=genome runs its own CMA-ES, which "
                                                 "evaluation.kind=racing cannot steer"),
])
def test_bad_config_is_a_one_line_error(override, message):
    with pytest.raises(ValueError) as err:
        validate(composed(*override.split()))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_ps_result_says_to_run_evo_ps_first(tmp_path):
    cfg = validate(composed("+experiment=toy_hybrid", f"pool.sources.ps_merge={tmp_path / 'no_ps_run'}"))
    with pytest.raises(FileNotFoundError, match=r"it is written by `python -m evo_ps`: run that first$"):
        check_sources(cfg.pool)


def test_full_cma_es_on_thousands_of_values_is_refused(tiny_model_dirs):
    cfg = validate(composed())
    # 8 four-layer sources: M = 32, a 32 x 32 W -> 1,088 values (read from the configs, no weights)
    cfg.pool.sources = {f"m{k}": str(tiny_model_dirs[name]) for k, name in enumerate(["src_a", "src_b"] * 4)}
    with pytest.raises(ValueError, match="full CMA-ES on 1088 values is impractical.*separable=true"):
        dfs_space(cfg)
    cfg.sampler.separable = True
    assert dfs_space(cfg).dim == 1088
    cfg.sampler.separable, cfg.space.scales = False, "wnet"
    assert dfs_space(cfg).dim == 64 + 41


@pytest.mark.parametrize("overrides, message", [
    (["space.repeats=0"], "error: space.repeats must be >= 1; got 0"),
    (["+experiment=ja_math"], "error: models not found locally, in the HF cache or on the hub: "
                              "pool.sources.shisa=augmxnt/shisa-gamma-7b-v1, "
                              "pool.sources.wizardmath=WizardLMTeam/WizardMath-7B-V1.1;"),
])
def test_cli_fails_fast_with_one_line_and_no_study(tmp_path, cli_error, monkeypatch, overrides, message):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no hub: missing means missing
    line = cli_error("evo_dfs", f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
                     *overrides)
    assert line.startswith(message)
    assert not (tmp_path / "run" / "study.db").exists() and not (tmp_path / "mlruns").exists()


# ---- searches on the zoo ----------------------------------------------------------------------------

@pytest.mark.slow
def test_search_logs_exports_and_resumes(tmp_path, run_cli, machine_paths):
    from mlflow.tracking import MlflowClient

    first = dfs(run_cli, tmp_path, *TINY, "n_trials=5")
    out = first.stdout
    db = tmp_path / "run" / "study.db"
    assert f"storage sqlite:///{db}" in out and f"inspect: optuna-dashboard sqlite:///{db}" in out
    assert trial_numbers(out) == [0, 1, 2, 3, 4]
    run_id = re.search(r"^mlflow  run ([0-9a-f]{32});", out, re.M).group(1)
    table = out[out.index("| model |"):]
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:5]] == ["ja", "math_wiz", "best_path"]

    study = optuna.load_study(study_name="dfs_toy_ja_math", storage=f"sqlite:///{db}")
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    space = DFSSpace(layout=SlotLayout(layers_per_model=(4, 4), repeats=2))
    assert trials[0].params == space.x0() and trials[0].user_attrs["path_length"] == 4  # trial 0 = model A
    for t in trials:  # the logged path facts are those of the trial's parameters
        path = space.path(t.params)
        assert t.user_attrs["path_length"] == len(path.layers)
        assert t.user_attrs["unique_layers"] == len(set(path.layers))
        assert t.user_attrs["hops_ja"] + t.user_attrs["hops_math_wiz"] == len(path.layers)

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert {"test.best_path.acc_ja", "test.ja.acc_ja", "test.math_wiz.acc", "test.best_path.layers"} <= \
        set(parent.data.metrics)
    nested = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(nested) == 5
    assert {"acc", "acc_ja", "path_length", "unique_layers", "n_params", "trial_seconds"} <= \
        set(nested[0].data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"history.png", "path.png", "test_table.md", "README.md", "config.json"} <= artifacts

    # the exported path loads with trust_remote_code and scores on the test split as in the table
    best = study.best_trial
    best_path = space.path(best.params)
    scored = subprocess.run(
        [sys.executable, "-c", SCORE_EXPORT, str(tmp_path / "run" / "best_model"), str(CONF_DIR), json.dumps(TINY)],
        cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", **env(tmp_path)}, capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr[-3000:]
    result = json.loads(scored.stdout.strip().splitlines()[-1])
    assert result["class"] == "LayerPathForCausalLM" and result["path_scales"] == list(best_path.scales)
    assert len(result["path_layers"]) == len(best_path.layers)
    assert result["acc_ja"] == pytest.approx(parent.data.metrics["test.best_path.acc_ja"])
    table_json = json.loads((tmp_path / "run" / "test_table.json").read_text())
    assert table_json["best_path"]["acc_ja"] == result["acc_ja"] and list(table_json) == ["ja", "math_wiz", "best_path"]
    assert isinstance(result["output"], str)
    assert "# dfs_toy_ja_math" in (tmp_path / "run" / "best_model" / "README.md").read_text()
    # the card and configs name the zoo's models by folder, not by this checkout's path
    assert machine_paths(tmp_path / "run" / "best_model", also=[tmp_path]) == {}
    assert "| A | ja | `ja` |" in (tmp_path / "run" / "best_model" / "README.md").read_text()

    again = dfs(run_cli, tmp_path, *TINY, "n_trials=5")  # the same command: nothing left to run
    assert trial_numbers(again.stdout) == [] and f"mlflow  run {run_id};" in again.stdout
    more = dfs(run_cli, tmp_path, *TINY, "n_trials=7")  # a larger budget: only the missing trials
    assert trial_numbers(more.stdout) == [5, 6] and f"mlflow  run {run_id};" in more.stdout
    assert len(optuna.load_study(study_name="dfs_toy_ja_math", storage=f"sqlite:///{db}").trials) == 7


@pytest.mark.slow
def test_genome_encoding_with_the_wnet(tmp_path, run_cli):
    run = dfs(run_cli, tmp_path, *TINY, "space.encoding=genome", "space.scales=wnet", "sampler.popsize=4", "n_trials=6")
    assert "57 values (genome)" in run.stdout  # T = 16 slots + 41 W-net values
    study = optuna.load_study(study_name="dfs_toy_ja_math", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert [t.user_attrs["generation"] for t in study.trials] == [0, 1, 1, 1, 1, 2]
    assert all(t.params == {} for t in study.trials)  # the genome is one user attr, not 57 parameters
    space = DFSSpace(layout=SlotLayout(layers_per_model=(4, 4), repeats=2), scales="wnet", hidden=8)
    best = study.best_trial
    exported = json.loads((tmp_path / "run" / "best_model" / "config.json").read_text())
    assert exported["path_scales"] == list(space.path(unpack_genome(best.user_attrs["genome"])).scales)


@pytest.mark.slow
def test_nsga2_trades_accuracy_against_path_length(tmp_path, run_cli):
    dfs(run_cli, tmp_path, *TINY, "sampler=nsga2", "sampler.popsize=4", "minimize=[path_length]", "n_trials=5")
    study = optuna.load_study(study_name="dfs_toy_ja_math", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert all(t.values[1] == t.user_attrs["path_length"] for t in study.trials)
    front = (tmp_path / "run" / "pareto_front.md").read_text().splitlines()
    assert front[0] == "| trial | acc_ja | path_length |" and len(front) == 2 + len(study.best_trials)
