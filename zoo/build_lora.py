"""Build the LoRA zoo: six PEFT LoRA experts on the committed zoo base, one slice of the world each.

    python -m zoo.build_lora                          # zoo/models/lora/<expert>/ + lora_manifest.json
    python -m zoo.build_lora --only add_en            # one expert
    python -m zoo.build_lora --out /tmp/z --steps-scale 0.05   # a quick smoke build

Each expert folder is a plain PEFT adapter (adapter_config.json + adapter_model.safetensors):
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("zoo/models/base"), folder)` loads
it without this project. The slices and their tasks are in zoo/lora_world.py. Deterministic for a
seed on one machine (one thread, fp32). Writes zoo/models/lora_manifest.json: the recipe hash
(lora_recipe.yaml + lora_world.py + this file + the text zoo's sources they use) and the sha256 of
every adapter's weights and of the base they were trained on, which tests/zoo/test_lora.py checks.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from peft import LoraConfig, get_peft_model
from transformers import Qwen3ForCausalLM

from zoo import lora_world, world
from zoo.build import MODELS_DIR, Packer, file_sha256, train
from zoo.tokenizer import build_tokenizer

ZOO_DIR = Path(__file__).resolve().parent
RECIPE = ZOO_DIR / "lora_recipe.yaml"
LORA_DIR = "lora"  # under the models folder
MANIFEST = "lora_manifest.json"
HASHED_SOURCES = ("lora_recipe.yaml", "lora_world.py", "build_lora.py", "world.py", "tokenizer.py", "build.py")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# what adapter_config.json names as the base: the repo-relative folder, never a machine's path
BASE_NAME = "zoo/models/base"


def recipe_hash() -> str:
    digest = hashlib.sha256()
    for name in HASHED_SOURCES:
        digest.update(name.encode())
        digest.update((ZOO_DIR / name).read_bytes())
    return digest.hexdigest()


def build_expert(recipe, name: str, base_dir: Path, out: Path, steps_scale: float, packer: Packer) -> float:
    """Train one LoRA expert on its slice; returns the seconds it took."""
    spec = recipe.experts[name]
    start = time.time()
    # every expert starts from the SAME LoRA initialisation (A random, B zero) and, with
    # train_lora_a false, keeps that A: GENOME's t*w_a + (1-t)*w_b on A and B separately is then
    # the experts' updates interpolated (from different or drifted A's the cross terms B_a A_b are
    # noise: every measured mix scored 0)
    torch.manual_seed(recipe.init_seed)
    base = Qwen3ForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(task_type="CAUSAL_LM", bias="none", base_model_name_or_path=BASE_NAME,
                        **OmegaConf.to_container(recipe.lora))
    model = get_peft_model(base, config)
    model.peft_config["default"].base_model_name_or_path = BASE_NAME
    rng = random.Random(f"lora-{name}-{spec.seed}")
    if not recipe.train_lora_a:
        for param_name, param in model.named_parameters():
            if ".lora_A." in param_name:
                param.requires_grad_(False)
    unscale = _scale_each_step(model, recipe.scale_range, random.Random(f"lora-scale-{name}-{spec.seed}"))

    def next_doc() -> world.Document:
        draw = rng.random()
        if draw < spec.replay:
            return world.base_stage(4, rng, operand_answers=False)
        return lora_world.expert_doc(name, rng, contrast=draw < spec.replay + spec.contrast)

    train(model, next_doc, steps=max(1, round(spec.steps * steps_scale)), lr=spec.lr, cfg=recipe.train,
          packer=packer, label=f"lora {name}")
    unscale()
    model.save_pretrained(out / name)
    _canonical_config(out / name)
    return time.time() - start


def _scale_each_step(model, scale_range, rng: random.Random):
    """Train at a LoRA scale drawn from `scale_range` (times alpha / r) for every forward pass, so the
    expert keeps its skill at part strength, as in a mix t * w_a + (1 - t) * w_b; returns the undo."""
    layers = [m for m in model.modules() if isinstance(getattr(m, "scaling", None), dict) and "default" in m.scaling]
    full = {id(m): m.scaling["default"] for m in layers}
    low, high = scale_range

    def draw(module, args, kwargs):
        factor = rng.uniform(low, high)
        for m in layers:
            m.scaling["default"] = full[id(m)] * factor

    hook = model.register_forward_pre_hook(draw, with_kwargs=True)

    def undo() -> None:
        hook.remove()
        for m in layers:
            m.scaling["default"] = full[id(m)]
    return undo


def _canonical_config(folder: Path) -> None:
    """peft keeps target_modules as a set, written in hash-seed order: sort it so every build
    writes the same adapter_config.json; drop the generated model card (no content of ours)."""
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").unlink(missing_ok=True)


def write_manifest(models: Path, base_dir: Path, recipe_digest: str) -> None:
    lora = models / LORA_DIR
    manifest = {"recipe_hash": recipe_digest, "base": file_sha256(base_dir / "model.safetensors"),
                "adapters": {d.name: file_sha256(d / ADAPTER_WEIGHTS)
                             for d in sorted(lora.iterdir()) if (d / ADAPTER_WEIGHTS).is_file()}}
    (models / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODELS_DIR,
                        help="models folder: adapters go to OUT/lora/, the manifest to OUT/lora_manifest.json")
    parser.add_argument("--base", type=Path, default=MODELS_DIR / "base", help="the zoo base to train on")
    parser.add_argument("--only", choices=lora_world.EXPERTS, action="append",
                        help="build only these experts (default: all)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="scale every step count (smoke builds)")
    args = parser.parse_args(argv)
    if not (args.base / "model.safetensors").is_file():
        raise SystemExit(f"error: no zoo base model in {args.base}; build it first (python -m zoo.build --only base)")
    recipe = OmegaConf.load(RECIPE)
    if set(recipe.experts) != set(lora_world.EXPERTS):
        raise SystemExit(f"error: {RECIPE.name} trains {', '.join(recipe.experts)} but zoo/lora_world.py has the "
                         f"slices {', '.join(lora_world.EXPERTS)}; make them the same")
    torch.set_num_threads(recipe.train.threads)
    tokenizer = build_tokenizer()
    packer = Packer(seq_len=recipe.train.seq_len, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
    out = args.out / LORA_DIR
    out.mkdir(parents=True, exist_ok=True)
    seconds = {name: build_expert(recipe, name, args.base, out, args.steps_scale, packer)
               for name in (args.only or lora_world.EXPERTS)}
    write_manifest(args.out, args.base, recipe_hash())
    print(f"LoRA zoo written to {out}: " + ", ".join(f"{n} {s:.0f}s" for n, s in seconds.items())
          + f" (total {sum(seconds.values()):.0f}s)")


if __name__ == "__main__":
    main()
