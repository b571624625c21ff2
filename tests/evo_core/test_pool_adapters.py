"""PEFT LoRA adapters as pool sources (evo_core/_adapters.py): an adapter source is its base with the
adapter merged by peft, the same tensors as a folder merged by peft beforehand; its fingerprint
covers the adapter's bytes and its base's; what is published names it `base+adapter`; bad adapters
fail in one line before any weight is read."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from evo_core import load_pool, model_fingerprint, published_name, resolve_adapter_sources
from evo_core._adapters import check_adapter_sources

REPO_ROOT = Path(__file__).resolve().parents[2]
ZOO = REPO_ROOT / "zoo" / "models"
BASE = ZOO / "base"
LORA = ZOO / "lora"
EXPERTS = ("add_en", "count_ja")


def peft_merged_folder(adapter: Path, out: Path, *, dtype: torch.dtype) -> Path:
    """What a user would do beforehand: the adapter merged into its base by peft, saved as a model."""
    model = AutoModelForCausalLM.from_pretrained(BASE, dtype=dtype)
    PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().save_pretrained(out)
    AutoTokenizer.from_pretrained(BASE).save_pretrained(out)
    return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_adapter_sources_equal_folders_merged_by_peft_beforehand(dtype, tmp_path):
    """Bit-equal, in float32 and bfloat16: the same peft merge in the same dtype (the merges of the
    two pools are compared in tests/evo_ps/test_ps_adapters.py)."""
    torch_dtype = getattr(torch, dtype)
    adapters = load_pool(base=BASE, sources={e: LORA / e for e in EXPERTS}, dtype=dtype)
    folders = load_pool(base=BASE, sources={e: peft_merged_folder(LORA / e, tmp_path / e, dtype=torch_dtype)
                                            for e in EXPERTS}, dtype=dtype)
    assert adapters.paths["add_en"] == f"{BASE}+{LORA / 'add_en'}"
    for expert in EXPERTS:
        changed = [k for k in adapters.param_names if not torch.equal(adapters.sources[expert][k], adapters.base[k])]
        # every linear layer of the 4 blocks is adapted (7 target modules), nothing else
        assert set(changed) == {k for k in adapters.param_names if k.endswith("_proj.weight")}, expert
        for key in adapters.param_names:  # bit-equal: the same peft merge in the same dtype
            assert torch.equal(adapters.sources[expert][key], folders.sources[expert][key]), (expert, key)


def test_a_source_names_its_adapter_in_one_line_either_way(tmp_path):
    folder = resolve_adapter_sources({"a": LORA / "add_en"}, base=BASE)
    explicit = resolve_adapter_sources({"a": f"{BASE}+{LORA / 'add_en'}"}, base=BASE)
    assert folder == explicit == {"a": f"{BASE}+{LORA / 'add_en'}"}
    # a model folder stays as it is; a base recorded by a path not here (the trainer's) and named as
    # the pool's base is the pool's base
    trained_elsewhere = with_recorded_base(LORA / "add_en", tmp_path / "elsewhere", "/home/trainer/models/base")
    assert resolve_adapter_sources({"m": BASE, "a": trained_elsewhere}, base=BASE) == {
        "m": str(BASE), "a": f"{BASE}+{trained_elsewhere}"}
    # a base that is here and is not the pool's is the adapter's own base (loaded and checked as a source)
    other_base = tmp_path / "other" / "base"
    shutil.copytree(BASE, other_base)
    on_other = with_recorded_base(LORA / "add_en", tmp_path / "on_other", str(other_base))
    assert resolve_adapter_sources({"a": on_other}, base=BASE) == {"a": f"{other_base.resolve()}+{on_other}"}


def with_recorded_base(adapter: Path, out: Path, recorded: str) -> Path:
    """A copy of `adapter` whose adapter_config.json names `recorded` as its base."""
    shutil.copytree(adapter, out)
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": recorded}))
    return out

def test_fingerprint_covers_the_adapter_bytes_and_its_base(tmp_path, tiny_model_dirs):
    copy = tmp_path / "add_en"
    shutil.copytree(LORA / "add_en", copy)
    ref = f"{BASE}+{copy}"
    first = model_fingerprint(ref)
    assert first == model_fingerprint(f"{BASE}+{LORA / 'add_en'}")  # content, not path
    assert first not in (model_fingerprint(str(BASE)), model_fingerprint(f"{BASE}+{LORA / 'count_ja'}"))
    assert first != model_fingerprint(f"{tiny_model_dirs['base']}+{copy}")  # another base
    data = bytearray((copy / "adapter_model.safetensors").read_bytes())
    data[len(data) // 2 + 1] ^= 1  # one bit of one weight, where no sample of a model fingerprint looks
    (copy / "adapter_model.safetensors").write_bytes(bytes(data))
    assert model_fingerprint(ref) != first


def test_published_names_name_base_and_adapter_without_paths():
    assert published_name(f"{BASE}+{LORA / 'add_en'}") == "base+add_en"
    assert published_name("mistralai/Mistral-7B-v0.1+/data/loras/my-lora") == "mistralai/Mistral-7B-v0.1+my-lora"


def tiny_adapter(base_dir: Path, out: Path, *, recorded_base: str) -> Path:
    """A real peft LoRA adapter on another (tiny) model, its config naming `recorded_base`."""
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(out / "trained")
    return with_recorded_base(out / "trained", out / "adapter", recorded_base)


def broken_adapter(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / kind
    shutil.copytree(LORA / "add_en", folder)
    weights = folder / "adapter_model.safetensors"
    config = json.loads((folder / "adapter_config.json").read_text())
    if kind == "missing":
        weights.unlink()
    elif kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:-1000])
    elif kind == "garbage":
        weights.write_bytes(b"not a safetensors file at all")
    elif kind == "ia3":
        (folder / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    elif kind == "unknown_base":
        (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "no/such/dir"}))
    return folder


@pytest.mark.parametrize("kind, message", [
    ("missing", "adapter 'bad': no adapter_model.safetensors in "),
    ("truncated", "adapter 'bad': corrupt adapter_model.safetensors ("),
    ("garbage", "adapter 'bad': corrupt adapter_model.safetensors ("),
    ("ia3", "adapter 'bad': peft_type 'IA3', expected 'LORA'"),
    ("unknown_base", "adapter 'bad': its base 'no/such/dir' (adapter_config.json) is not the pool's base, a local "
                     "folder or a hub id; name it: pool.sources.bad=BASE+"),
])
def test_bad_adapter_is_one_line_before_any_weight(tmp_path, kind, message):
    folder = broken_adapter(tmp_path, kind)
    with pytest.raises(ValueError, match="^" + re.escape(message)) as err:
        check_adapter_sources(resolve_adapter_sources({"bad": folder}, base=BASE), base=BASE)
    assert "\n" not in str(err.value)


def test_an_adapter_for_another_base_is_one_line(tmp_path, tiny_model_dirs):
    tiny = tiny_model_dirs["base"]  # hidden size 64: the zoo base's is not
    # its config names the tiny base: that base's shapes are not the pool base's
    own = tiny_adapter(tiny, tmp_path / "own", recorded_base=str(tiny))
    with pytest.raises(ValueError, match=r"^adapter 'bad': its base .* does not fit the pool's base \(tensor "):
        check_adapter_sources(resolve_adapter_sources({"bad": own}, base=BASE), base=BASE)
    # its config claims the zoo base (or the config names it so): its A and B do not fit that base's weights
    for source in (tiny_adapter(tiny, tmp_path / "claims", recorded_base="zoo/models/base"), f"{BASE}+{own}"):
        with pytest.raises(ValueError, match=r"^adapter 'bad': base_model\.model\.model\.layers\.0\.self_attn\.q_proj"
                                             r"\.lora_A\.weight has shape \(2, 64\) \(rank 2\), which does not fit "
                                             r"model\.layers\.0\.self_attn\.q_proj\.weight \(\d+, \d+\) of its base base "
                                             r"\(an adapter for another base\?"):
            check_adapter_sources(resolve_adapter_sources({"bad": source}, base=BASE), base=BASE)
    with pytest.raises(ValueError, match=r"pool.base .* is a LoRA adapter; the base is a model"):
        resolve_adapter_sources({"a": LORA / "add_en"}, base=LORA / "count_ja")
    with pytest.raises(ValueError, match=r"is not BASE\+ADAPTER"):
        resolve_adapter_sources({"a": f"{BASE}+{own}+{own}"}, base=BASE)


def test_a_hub_adapter_comes_from_the_hf_cache_and_is_published_by_its_id(tmp_path, monkeypatch):
    """`BASE+owner/name`: the adapter's snapshot in the HF cache (offline here), named by its hub id."""
    import huggingface_hub

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--add-lora"
    shutil.copytree(LORA / "add_en", repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    resolved = resolve_adapter_sources({"a": f"{BASE}+someone/add-lora"}, base=BASE)
    snapshot = repo / "snapshots" / revision
    assert resolved == {"a": f"{BASE}+{snapshot}"}
    assert published_name(resolved["a"]) == "base+someone/add-lora"
    check_adapter_sources(resolved, base=BASE)
    with pytest.raises(ValueError, match=r"^adapter 'b': hub adapter 'someone/other' cannot be had here \(\w+\); "
                                         r"download it \(hf download someone/other --local-dir DIR\)"):
        resolve_adapter_sources({"b": f"{BASE}+someone/other"}, base=BASE)
