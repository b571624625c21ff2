"""Model pool: loading, host copies vs the live model, and the one-line checks before loading."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from evo_core import check_model_path, load_models, load_pool


def sources(dirs, *names):
    return {n: dirs[n] for n in names}


def test_load_pool(tiny_model_dirs):
    pool = load_pool(base=tiny_model_dirs["base"], sources=sources(tiny_model_dirs, "src_a", "src_b"))
    assert pool.source_names == ("src_a", "src_b")
    assert pool.num_layers == 4 and pool.dtype == torch.float32 and pool.device.type == "cpu"
    assert pool.tokenizer.pad_token_id == 0 and pool.config.model_type == "qwen3"
    assert set(pool.paths) == {"base", "src_a", "src_b"}
    names = [k for k, _ in pool.model.named_parameters()]
    assert list(pool.param_names) == names and len(names) == 47
    for k, p in pool.model.named_parameters():
        assert torch.equal(p, pool.base[k]) and p.data_ptr() != pool.base[k].data_ptr()
        assert not p.requires_grad
        assert not torch.equal(pool.sources["src_a"][k], pool.base[k])  # sources really differ
    with torch.no_grad():
        pool.model.get_parameter(names[0]).add_(1.0)
    assert not torch.equal(pool.model.get_parameter(names[0]), pool.base[names[0]])
    pool.reset()
    assert torch.equal(pool.model.get_parameter(names[0]), pool.base[names[0]])


def test_load_models_for_dataflow(tiny_model_dirs):
    models = load_models(sources(tiny_model_dirs, "src_a", "src_b", "src_c"), dtype="bfloat16")
    assert list(models) == ["src_a", "src_b", "src_c"]
    assert all(m.dtype == torch.bfloat16 and not m.training for m in models.values())


def test_missing_path_and_hub_ids(tiny_model_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model 'src_b': /nowhere/src_b does not exist; point model "
                                                r"'src_b' in the config at a local copy"):
        load_pool(base=tiny_model_dirs["base"], sources={"src_a": tiny_model_dirs["src_a"], "src_b": "/nowhere/src_b"})
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        check_model_path("x", tmp_path)
    assert check_model_path("x", "Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"  # left to the hub loader
    with pytest.raises(FileNotFoundError):
        check_model_path("x", "./not/here")


def test_bad_pool_requests(tiny_model_dirs):
    with pytest.raises(ValueError, match="needs at least 2 source models; got 1: src_a"):
        load_pool(base=tiny_model_dirs["base"], sources=sources(tiny_model_dirs, "src_a"))
    with pytest.raises(ValueError, match="unknown dtype 'fp8'; known: float32, bfloat16, float16"):
        load_models(sources(tiny_model_dirs, "src_a"), dtype="fp8")
    with pytest.raises(ValueError, match="model name 'src.a' must use only"):
        load_pool(base=tiny_model_dirs["base"],
                  sources={"src.a": tiny_model_dirs["src_a"], "b": tiny_model_dirs["src_b"]})


def save(model, path):
    model.save_pretrained(path)
    return path


def test_mismatched_architecture_and_shapes(tiny_model_dirs, tmp_path):
    base_cfg = Qwen3Config.from_pretrained(tiny_model_dirs["base"])
    llama = save(LlamaForCausalLM(LlamaConfig(vocab_size=base_cfg.vocab_size, hidden_size=64, intermediate_size=128,
                                              num_hidden_layers=4, num_attention_heads=4)), tmp_path / "llama")
    with pytest.raises(ValueError, match=r"model 'odd' is \(\('LlamaForCausalLM',\), 'llama'\) but 'base' is "
                                         r"\(\('Qwen3ForCausalLM',\), 'qwen3'\)"):
        load_pool(base=tiny_model_dirs["base"], sources={"src_a": tiny_model_dirs["src_a"], "odd": llama})

    wide = save(Qwen3ForCausalLM(Qwen3Config(**{**base_cfg.to_dict(), "intermediate_size": 96})), tmp_path / "wide")
    with pytest.raises(ValueError, match=r"tensor model.layers.0.mlp.down_proj.weight has shape \(64, 96\) in "
                                         r"model 'odd' but \(64, 128\) in 'base'"):
        load_pool(base=tiny_model_dirs["base"], sources={"src_a": tiny_model_dirs["src_a"], "odd": wide})
    deep_cfg = Qwen3Config(**{**base_cfg.to_dict(), "num_hidden_layers": 5, "layer_types": None})
    deep = save(Qwen3ForCausalLM(deep_cfg), tmp_path / "deep")
    with pytest.raises(ValueError, match="tensor model.layers.4.input_layernorm.weight is in model 'deep' but not"):
        load_models({"base": tiny_model_dirs["base"], "deep": deep})
    assert len(load_models({"base": tiny_model_dirs["base"], "deep": deep}, same_shapes=False)) == 2


# ---- safetensors only, unless the pool opts in to pickled weights (read with weights_only=True) -----------

def pickled_copy(model_dir, out, state_dict=None):
    """`model_dir` as transformers 4 wrote it with safe_serialization=False: config, tokenizer and
    pytorch_model.bin (torch.save's pickle) instead of model.safetensors."""
    import shutil

    from transformers import AutoModelForCausalLM

    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(state_dict if state_dict is not None else AutoModelForCausalLM.from_pretrained(model_dir).state_dict(),
               out / "pytorch_model.bin")
    return out


class WritesMarker:
    """A pickle that runs code on loading: unpickled, it would create `path`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.path}",)


def test_pickled_weights_are_refused_before_any_load_with_the_command_that_converts_them(
        tiny_model_dirs, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    pickled = pickled_copy(tiny_model_dirs["src_b"], tmp_path / "src_b_bin")
    with monkeypatch.context() as patch:  # not a weight read before the refusal, of any model
        patch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
        patch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("a model was loaded"))
        with pytest.raises(ValueError) as refused:
            load_pool(base=tiny_model_dirs["base"], sources={"src_a": tiny_model_dirs["src_a"], "src_b": pickled})
    message = str(refused.value)
    assert "\n" not in message and message.startswith(
        f"model 'src_b': {pickled} has pickled weights only (pytorch_model.bin), which can run code when loaded; "
        f"convert them to safetensors once: python -c ")
    assert message.endswith("(or set pool.allow_pickle_weights=true to load them with torch.load(weights_only=True))")
    # the command it gives converts them: then the same pool loads, with the same weights
    command = message.split('python -c "', 1)[1].split('"', 1)[0]
    exec(command, {})
    pool = load_pool(base=tiny_model_dirs["base"], sources={"src_a": tiny_model_dirs["src_a"], "src_b": pickled})
    reference = load_models({"src_b": tiny_model_dirs["src_b"]})["src_b"]
    assert all(torch.equal(pool.sources["src_b"][k], p) for k, p in reference.named_parameters())
    # a folder without any weights says so
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((tiny_model_dirs["src_b"] / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"model 'e': .*/empty has no weights \(no \*.safetensors file\)"):
        load_models({"src_a": tiny_model_dirs["src_a"], "e": tmp_path / "empty"})


def test_with_the_opt_in_pickled_weights_load_with_weights_only_and_merge(tiny_model_dirs, tmp_path, monkeypatch):
    from evo_ps import InMemoryMerger, build_space, merge_method

    pickled = pickled_copy(tiny_model_dirs["src_b"], tmp_path / "src_b_bin")
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("weights_only")) or real_load(*a, **k))
    names = {"src_a": tiny_model_dirs["src_a"]}
    opted = load_pool(base=tiny_model_dirs["base"], sources={**names, "src_b": pickled}, allow_pickle_weights=True)
    assert loads == [True]  # the one pickle read, and with weights_only=True
    plain = load_pool(base=tiny_model_dirs["base"], sources={**names, "src_b": tiny_model_dirs["src_b"]})
    method = merge_method("task_arithmetic")
    merged = []
    for pool in (opted, plain):
        space = build_space(method=method, sources=pool.source_names, tensor_names=pool.param_names,
                            num_layers=pool.num_layers, uniform=True)
        InMemoryMerger(pool=pool, method=method).apply(space.tensor_params({p.name: 0.4 for p in space.params}),
                                                       seed=0)
        merged.append({k: p.detach().clone() for k, p in pool.model.named_parameters()})
    assert all(torch.equal(merged[0][k], merged[1][k]) for k in merged[1])
    assert not torch.equal(merged[0]["model.norm.weight"], plain.base["model.norm.weight"])  # it did merge


def test_a_pickle_that_would_run_code_is_refused_in_one_line_even_with_the_opt_in(tiny_model_dirs, tmp_path):
    marker = tmp_path / "MARKER"
    evil = pickled_copy(tiny_model_dirs["src_b"], tmp_path / "evil", state_dict={"lm_head.weight": WritesMarker(marker)})
    with pytest.raises(ValueError) as refused:
        load_pool(base=tiny_model_dirs["base"], sources={"src_a": tiny_model_dirs["src_a"], "src_b": evil},
                  allow_pickle_weights=True)
    assert str(refused.value) == (f"model 'src_b': the pickled weights in {evil} hold more than tensors (Trying to "
                                  f"load unsupported GLOBAL posix.system whose module posix is blocked); refused "
                                  f"(unpickling them could run code): get safetensors weights from a source you trust")
    assert not marker.exists()


ZOO = Path(__file__).resolve().parents[2] / "zoo" / "models"


@pytest.mark.parametrize("command", ["evo_ps", "evo_dfs", "evo_breed"])
def test_every_search_refuses_pickled_weights_in_one_line_before_the_study(command, tmp_path, cli_error):
    pickled = pickled_copy(ZOO / "math_wiz", tmp_path / "math_wiz")
    line = cli_error(command, f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
                     f"pool.sources.math_wiz={pickled}")
    assert line.startswith(f"error: model 'math_wiz': {pickled} has pickled weights only (pytorch_model.bin)"), line
    assert "pool.allow_pickle_weights=true" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "mlruns").exists()


def test_a_malicious_pickle_with_the_opt_in_is_one_line_from_the_command_and_runs_nothing(tmp_path, cli_error):
    marker = tmp_path / "MARKER"
    evil = pickled_copy(ZOO / "math_wiz", tmp_path / "math_wiz", state_dict={"lm_head.weight": WritesMarker(marker)})
    line = cli_error("evo_ps", f"run_dir={tmp_path / 'run'}", f"tracking.mlruns_dir={tmp_path / 'mlruns'}",
                     f"pool.sources.math_wiz={evil}", "pool.allow_pickle_weights=true", "objective.search.limit=4")
    assert line.startswith(f"error: model 'math_wiz': the pickled weights in {evil} hold more than tensors "
                           f"(Trying to load unsupported GLOBAL posix.system"), line
    assert "weights_only=False" not in line and "weights_only` set to `False" not in line
    assert not marker.exists()
    assert not (tmp_path / "run" / "study.db").exists() and not (tmp_path / "mlruns").exists()
