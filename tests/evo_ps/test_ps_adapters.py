"""LoRA adapters as PS sources: a merge of adapter sources equals the same merge of folders merged by
peft beforehand, mergekit rebuilds it from the exported YAML (`base+adapter`), `python -m evo_ps`
runs end to end on two LoRA zoo experts, and a bad adapter is one line before any study exists."""
from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from evo_core import load_pool
from evo_ps import InMemoryMerger, build_space, merge_method, mergekit_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = REPO_ROOT / "zoo" / "models" / "base"
LORA = REPO_ROOT / "zoo" / "models" / "lora"
EXPERTS = ("add_en", "count_ja", "qa_ja")
ATOL = 2e-6  # as the other mergekit round trips (test_ps_export.py)


@pytest.fixture(scope="module")
def adapter_pool():
    return load_pool(base=BASE, sources={e: LORA / e for e in EXPERTS})


@pytest.fixture(scope="module")
def folder_pool(tmp_path_factory):
    """The same experts merged into the base by peft beforehand and saved as plain model folders."""
    root = tmp_path_factory.mktemp("peft_merged")
    for expert in EXPERTS:
        model = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
        PeftModel.from_pretrained(model, str(LORA / expert)).merge_and_unload().save_pretrained(root / expert)
        AutoTokenizer.from_pretrained(BASE).save_pretrained(root / expert)
    return load_pool(base=BASE, sources={e: root / e for e in EXPERTS})


@pytest.mark.parametrize("method", ["task_arithmetic", "dare_ties", "breadcrumbs_ties"])
def test_merge_of_adapter_sources_is_bit_equal_to_merge_of_peft_merged_folders(method, adapter_pool, folder_pool,
                                                                              spread):
    """Bit-equal in float32 (not only within tolerance): each source is the same peft merge, and the
    merge itself, random drops included (seeded by trial, tensor and source name), is the same."""
    chosen = merge_method(method)
    merged = {}
    for name, pool in (("adapters", adapter_pool), ("folders", folder_pool)):
        space = build_space(method=chosen, sources=pool.source_names, tensor_names=pool.param_names,
                            num_layers=pool.num_layers)
        InMemoryMerger(pool=pool, method=chosen).apply(space.tensor_params(spread(space)), seed=3)
        merged[name] = {k: v.clone() for k, v in pool.live_params().items()}
    assert all(torch.equal(merged["adapters"][k], merged["folders"][k]) for k in merged["adapters"])
    assert any(not torch.equal(merged["adapters"][k], adapter_pool.base[k]) for k in adapter_pool.param_names)


def test_mergekit_rebuilds_the_merge_from_the_base_plus_adapter_yaml(adapter_pool, spread, run_mergekit, tmp_path):
    method = merge_method("task_arithmetic")
    space = build_space(method=method, sources=adapter_pool.source_names, tensor_names=adapter_pool.param_names,
                        num_layers=adapter_pool.num_layers)
    params = space.tensor_params(spread(space))
    InMemoryMerger(pool=adapter_pool, method=method).apply(params, seed=0)
    ours = {k: v.clone() for k, v in adapter_pool.live_params().items()}
    text = mergekit_yaml(method=method, tensor_params=params, base=adapter_pool.paths["base"],
                         sources={s: adapter_pool.paths[s] for s in adapter_pool.source_names})
    config = yaml.safe_load(text)
    assert config["models"][0]["model"] == f"{BASE}+{LORA / 'add_en'}"  # mergekit's own syntax
    theirs = run_mergekit(config, lora_merge_cache=str(tmp_path / "lora_cache"))
    worst = max(((ours[k] - theirs[k]).abs().max().item(), k) for k in ours)
    assert worst[0] <= ATOL, f"max |in-memory - mergekit(yaml)| = {worst[0]:.3g} in {worst[1]}"


def lora_cli_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["+experiment=toy_lora_ps", f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
            "objective.search.limit=20", "+objective.test.limit=20", "n_trials=3", "space.warm_start_trials=2",
            *extra]


@pytest.mark.slow
def test_evo_ps_runs_on_two_lora_zoo_adapters(tmp_path, run_cli, machine_paths, error_line):
    # the adapters copied: the run's fingerprint must change when one of their bytes does
    adapters = {e: shutil.copytree(LORA / e, tmp_path / "lora" / e) for e in ("add_en", "count_ja")}
    # one line each: an adapter folder, and mergekit's BASE+ADAPTER on the pool's base
    sources = [f"pool.sources.add_en={adapters['add_en']}", f"pool.sources.count_ja=${{pool.base}}+{adapters['count_ja']}"]
    proc = run_cli("evo_ps", *lora_cli_args(tmp_path, *sources))
    out = proc.stdout
    for row in ("| base |", "| add_en |", "| count_ja |", "| best_uniform |", "| best_merge |"):
        assert row in out, row
    trials = optuna.load_study(study_name="toy_lora_ps", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}").trials
    assert len(trials) == 3 and all(t.state.is_finished() for t in trials)
    signature = optuna.load_study(study_name="toy_lora_ps",
                                  storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}").user_attrs["signature"]
    assert signature["models"] == {"base": str(BASE), **{e: f"{BASE}+{folder}" for e, folder in adapters.items()}}

    model_dir = tmp_path / "run" / "best_model"
    assert AutoModelForCausalLM.from_pretrained(model_dir).config.num_hidden_layers == 4
    readme = (model_dir / "README.md").read_text()
    assert "| source | add_en | `base+add_en` |" in readme and "--lora-merge-cache CACHE_DIR" in readme
    assert "base_model:\n- base\n- add_en\n- count_ja\n" in readme
    recipe = yaml.safe_load((model_dir / "mergekit_config.yml").read_text())
    assert [m["model"] for m in recipe["models"]] == ["base+add_en", "base+count_ja"]
    assert machine_paths(model_dir, also=[tmp_path, REPO_ROOT]) == {}
    local = yaml.safe_load((tmp_path / "run" / "mergekit_config.local.yml").read_text())
    assert local["models"][0]["model"] == f"{BASE}+{adapters['add_en']}"

    # one changed bit of an adapter is another search: the study refuses to resume, in one line
    weights = adapters["count_ja"] / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 + 1] ^= 1
    weights.write_bytes(bytes(data))
    line = error_line(run_cli("evo_ps", *lora_cli_args(tmp_path, *sources, "n_trials=4"), ok=False))
    assert "was run with model_hashes" in line and "count_ja" in line, line


def adapter_on(base_dir: Path, out: Path) -> Path:
    """A real peft LoRA adapter on another model (the tiny test base, hidden size 64)."""
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(out)
    return out


@pytest.mark.parametrize("case, message", [
    ("other_base", "adapter 'bad': its base "),
    ("claims_pool_base", "adapter 'bad': base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight has shape "
                         "(2, 64) (rank 2), which does not fit model.layers.0.self_attn.q_proj.weight (192, 192)"),
    ("corrupt", "adapter 'bad': corrupt adapter_model.safetensors ("),
    ("lora_only_config", "adapter 'bad': no adapter_model.safetensors in "),
])
def test_bad_adapter_source_is_one_line_before_any_study(case, message, tmp_path, tiny_model_dirs, cli_error):
    other = adapter_on(tiny_model_dirs["base"], tmp_path / "tiny_lora")
    if case == "other_base":
        source = str(other)  # its config names the tiny base: not the pool's shapes
    elif case == "claims_pool_base":
        source = f"{BASE}+{other}"  # applied to the zoo base as the config line says: A and B do not fit
    else:
        source = shutil.copytree(LORA / "add_en", tmp_path / "bad")
        weights = source / "adapter_model.safetensors"
        if case == "corrupt":
            weights.write_bytes(weights.read_bytes()[:5000])
        else:
            weights.unlink()
    line = cli_error("evo_ps", f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
                     f"+pool.sources.bad={source}")
    assert message in line, line
    assert not (tmp_path / "run" / "study.db").exists() and not (tmp_path / "mlruns").exists()
