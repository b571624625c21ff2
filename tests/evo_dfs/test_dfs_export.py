"""Export round trip: the exported directory loads and generates WITHOUT this project importable."""
from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import evo_dfs
from evo_dfs import LayerPathForCausalLM, export_layer_path

PATH = [0, 1, 5, 5, 1, 9, 3]
SCALES = [1.0, 1.1, 0.9, 1.2, 0.8, 1.0, 1.05]
STEPS = 8

# Runs with `python -S` (no site: the editable install's import hook and .pth files stay off) and only
# the interpreter's site-packages appended by hand, from a temp cwd: torch + transformers, no evomerge.
ISOLATED = r"""
import json, sys
sys.path.append(sys.argv[1])
try:
    import evo_dfs
    sys.exit("evo_dfs must not be importable here")
except ImportError:
    pass
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_outputs import CausalLMOutputWithPast
d = sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True, dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(d, trust_remote_code=True)  # config.json has an auto_map
enc = tok(json.loads(sys.argv[3]), return_tensors="pt", padding=True)
ids, mask, steps = enc["input_ids"], enc["attention_mask"], int(sys.argv[4])
past, new = None, []
# the installed transformers' name for the KV cache (`cache` from 5.24, `past_key_values` before)
cache_arg = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
with torch.no_grad():
    for _ in range(steps):  # the objectives' loop: positions from the mask, cache fed back
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        feed, fpos = (ids, pos) if past is None else (ids[:, -1:], pos[:, -1:])
        out = model(input_ids=feed, attention_mask=mask, position_ids=fpos, use_cache=True, **{cache_arg: past})
        past, nxt = getattr(out, cache_arg), out.logits[:, -1].argmax(-1, keepdim=True)
        new.append(nxt)
        ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
    gen = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], do_sample=False,
                         max_new_tokens=steps, min_new_tokens=steps, pad_token_id=tok.pad_token_id)
print(json.dumps({"loop": torch.cat(new, 1).tolist(), "generate": gen[:, enc["input_ids"].shape[1]:].tolist(),
                  "class": type(model).__name__, "layers": len(model.model.layers)}))
"""


@pytest.fixture(scope="module")
def exported(sources, tokenizer, tmp_path_factory):
    model = LayerPathForCausalLM.from_sources(sources, PATH, SCALES, source_names=["a", "b", "c"])
    out = export_layer_path(model, tmp_path_factory.mktemp("export") / "best", tokenizer=tokenizer)
    return model, out


def test_export_stores_each_visited_layer_once(exported):
    _, out = exported
    assert filecmp.cmp(out / "modeling_layer_path.py", Path(evo_dfs.__file__).parent / "modeling_layer_path.py",
                       shallow=False)
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_layer_path.LayerPathForCausalLM"
    used = sorted(set(PATH))  # global ids 0, 1, 3, 5, 9 -> stored 0..4
    assert config["num_stored_layers"] == len(used)
    assert config["path_layers"] == [used.index(g) for g in PATH]
    assert config["path_scales"] == SCALES
    assert config["stored_layer_origins"] == ["a.layers.0", "a.layers.1", "a.layers.3", "b.layers.1", "c.layers.1"]
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    stored = {k.split(".")[2] for k in keys if k.startswith("model.layers.")}
    assert stored == {str(i) for i in range(len(used))}
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} <= set(keys)


def test_export_refuses_non_empty_dir(exported):
    model, out = exported
    with pytest.raises(FileExistsError, match="not empty"):
        export_layer_path(model, out)


def test_an_export_that_fails_midway_leaves_the_previous_one_whole(exported, tmp_path):
    class FailingTokenizer:  # the weights are written, then the disk fills up
        def save_pretrained(self, out):
            raise OSError(28, "No space left on device")

    model, out = exported
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OSError, match="No space"):
        export_layer_path(model, out, tokenizer=FailingTokenizer(), overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    with pytest.raises(OSError):
        export_layer_path(model, tmp_path / "fresh", tokenizer=FailingTokenizer())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@torch.no_grad()
def test_exported_model_loads_and_generates_without_the_project(exported, prompts, batch, greedy, tmp_path):
    model, out = exported
    expected = greedy(model, *batch, STEPS, use_cache=True).tolist()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # remote-code module cache in tmp; one thread, as the whole suite (tests/conftest.py)
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-S", "-c", ISOLATED, sysconfig.get_paths()["purelib"], str(out), json.dumps(prompts),
         str(STEPS)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["class"] == "LayerPathForCausalLM" and got["layers"] == len(set(PATH))
    assert got["loop"] == expected
    assert got["generate"] == expected
