"""Build the VLM zoo: a tiny LLaVA (SigLIP tower + projector + a copy of zoo/models/base) trained
on the English VQA world (zoo/vqa.py) in the recipe's stages, and a text-only Japanese expert for
that world.

    python -m zoo.build_vlm                      # zoo/models/vlm and zoo/models/ja_vqa
    python -m zoo.build_vlm --only vlm           # one model
    python -m zoo.build_vlm --out /tmp/z --steps-scale 0.01   # a quick smoke build

Made of transformers' own classes only: `LlavaForConditionalGeneration` + `LlavaProcessor`
(SiglipImageProcessor + the zoo's character tokenizer plus one added special token `<image>`,
id 283), so `AutoModelForImageTextToText` / `AutoProcessor` load it without this project.
The VLM's embed_tokens / lm_head have 284 rows, the text zoo's 283 (as llava-v1.6-mistral's
32064 vs Mistral's 32000); language-model tensors map `model.X` <-> `model.language_model.X`,
`lm_head.weight` stays. Writes zoo/models/vlm_manifest.json: the recipe hash and the sha256 of
each weight file, which tests/zoo/test_vlm.py checks against the committed files.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import (GenerationConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
                          Qwen3Config, Qwen3ForCausalLM, SiglipImageProcessor, SiglipVisionConfig)

from zoo import vqa, world
from zoo.build import Packer, train
from zoo.tokenizer import build_tokenizer

ZOO_DIR = Path(__file__).resolve().parent
RECIPE = ZOO_DIR / "vlm_recipe.yaml"
MODELS_DIR = ZOO_DIR / "models"
MANIFEST = "vlm_manifest.json"
HASHED_SOURCES = ("vlm_recipe.yaml", "vqa.py", "build_vlm.py", "world.py", "tokenizer.py", "build.py")
BASE_DIR = MODELS_DIR / "base"
IGNORE = -100
EXPERTS = ("ja_vqa",)
MODELS = ("vlm", *EXPERTS)


def recipe_hash() -> str:
    digest = hashlib.sha256()
    for name in HASHED_SOURCES:
        digest.update(name.encode())
        digest.update((ZOO_DIR / name).read_bytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vlm_tokenizer():
    """The zoo's character tokenizer plus the special token `<image>` (id 283)."""
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [vqa.IMAGE_TOKEN]})
    assert tokenizer.convert_tokens_to_ids(vqa.IMAGE_TOKEN) == len(build_tokenizer())
    return tokenizer


def image_processor(size: int) -> SiglipImageProcessor:
    return SiglipImageProcessor(size={"height": size, "width": size}, do_resize=True, do_rescale=True,
                                do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def make_processor(recipe) -> LlavaProcessor:
    """One `<image>` expands to (32 / 8)^2 = 16 tokens: vision_feature_select_strategy "full"
    (SigLIP has no CLS token) and no additional image tokens."""
    return LlavaProcessor(image_processor=image_processor(recipe.vision.image_size), tokenizer=vlm_tokenizer(),
                          patch_size=recipe.vision.patch_size, vision_feature_select_strategy="full",
                          num_additional_image_tokens=0, image_token=vqa.IMAGE_TOKEN)


def image_tokens(recipe) -> int:
    return (recipe.vision.image_size // recipe.vision.patch_size) ** 2


def new_vlm(recipe, base_dir: Path = BASE_DIR) -> LlavaForConditionalGeneration:
    """A LLaVA whose language model is a copy of the base, embeddings grown by the image row."""
    base = Qwen3ForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    tokenizer = vlm_tokenizer()
    image_id = tokenizer.convert_tokens_to_ids(vqa.IMAGE_TOKEN)
    text_config = Qwen3Config(**{k: v for k, v in base.config.to_dict().items()
                                 if k not in ("architectures", "transformers_version", "dtype", "_name_or_path")})
    text_config.vocab_size = len(tokenizer)
    config = LlavaConfig(vision_config=SiglipVisionConfig(**recipe.vision), text_config=text_config,
                         image_token_index=image_id, projector_hidden_act="gelu",
                         vision_feature_select_strategy="full", vision_feature_layer=-1,
                         image_seq_length=image_tokens(recipe), tie_word_embeddings=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(recipe.seed)
    vlm = LlavaForConditionalGeneration(config)
    state = {}
    for key, value in base.state_dict().items():
        if key == "lm_head.weight":
            new_key = key
        else:
            assert key.startswith("model."), key
            new_key = "model.language_model." + key[len("model."):]
        if key in ("model.embed_tokens.weight", "lm_head.weight"):  # the extra row: the mean row
            value = torch.cat([value, value.mean(0, keepdim=True)])
        state[new_key] = value
    missing, unexpected = vlm.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(("model.vision_tower.", "model.multi_modal_projector."))
                                  for k in missing), (missing, unexpected)
    return vlm


def vqa_batch(items: list[dict], processor: LlavaProcessor, n_image_tokens: int):
    """Right-padded training batch: loss on the answer and the end-of-text token only."""
    tokenizer = processor.tokenizer
    vocab = tokenizer.get_vocab()
    image_id = vocab[vqa.IMAGE_TOKEN]
    rows = []
    for item in items:
        prompt = [image_id] * n_image_tokens + [vocab[c] for c in world.PROMPT.format(question=item["question"])]
        target = [vocab[c] for c in item["answer"]] + [tokenizer.eos_token_id]
        rows.append((prompt + target, [IGNORE] * len(prompt) + target))
    length = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, :len(row_ids)] = torch.tensor(row_ids)
        labels[i, :len(row_labels)] = torch.tensor(row_labels)
        mask[i, :len(row_ids)] = 1
    pixels = processor.image_processor([item["image"] for item in items], return_tensors="pt")["pixel_values"]
    return ids, mask, labels, pixels


def train_vlm_stage(vlm, processor, recipe, stage, steps: int, label: str) -> None:
    """One stage: the vision tower + projector (unless lr_vision is 0) and the LM tensors named in
    `lm_trained` (relative to the LM: "layers.0.", "norm.", "lm_head.") learn; the rest stay as they are.
    Every stage draws its batches from the same seeded stream."""
    spec = recipe.vlm
    lm_trained = tuple("lm_head." if t == "lm_head." else "model.language_model." + t for t in stage.lm_trained)
    groups = {"vision": [], "lm": []}
    for name, param in vlm.named_parameters():
        is_vision = name.startswith(("model.vision_tower.", "model.multi_modal_projector."))
        assert is_vision or name.startswith(("model.language_model.", "lm_head.")), name
        param.requires_grad_(stage.lr_vision > 0 if is_vision else name.startswith(lm_trained))
        if param.requires_grad:
            groups["vision" if is_vision else "lm"].append(param)
    assert groups["lm"], f"{label}: lm_trained {list(stage.lm_trained)} names no LM tensor"
    vlm.zero_grad(set_to_none=True)  # no stale gradients of the last stage in this one's clipping
    opt = torch.optim.AdamW([{"params": groups["vision"], "lr": stage.lr_vision, "peak": stage.lr_vision},
                             {"params": groups["lm"], "lr": stage.lr_lm, "peak": stage.lr_lm}],
                            betas=(0.9, 0.95), weight_decay=spec.weight_decay)
    warmup = min(spec.warmup_steps, max(1, steps // 10))

    def scale(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    rng = random.Random(f"vlm-{recipe.seed}")
    n_tokens = image_tokens(recipe)
    vlm.train()
    start = time.time()
    for step in range(steps):
        ids, mask, labels, pixels = vqa_batch([vqa.train_vqa_item(rng) for _ in range(spec.batch_size)],
                                              processor, n_tokens)
        for group in opt.param_groups:
            group["lr"] = group["peak"] * scale(step)
        loss = vlm(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vlm.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"[{label}] step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - start:.0f}s)", flush=True)


def build_vlm(recipe, out: Path, steps_scale: float, base_dir: Path = BASE_DIR) -> None:
    vlm = new_vlm(recipe, base_dir)
    processor = make_processor(recipe)
    for index, stage in enumerate(recipe.vlm.stages):
        train_vlm_stage(vlm, processor, recipe, stage, max(1, round(stage.steps * steps_scale)), label=f"vlm {index + 1}")
    vlm.eval()
    tokenizer = processor.tokenizer
    vlm.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                             bos_token_id=tokenizer.eos_token_id, do_sample=False,
                                             max_new_tokens=24)
    vlm.save_pretrained(out / "vlm")
    processor.save_pretrained(out / "vlm")


def build_expert(recipe, name: str, out: Path, steps_scale: float, base_dir: Path = BASE_DIR) -> None:
    spec = recipe.experts[name]
    tokenizer = build_tokenizer()
    packer = Packer(seq_len=recipe.train.seq_len, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
    torch.manual_seed(spec.seed)
    model = Qwen3ForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    rng = random.Random(f"{name}-{spec.seed}")

    def next_doc() -> world.Document:
        if rng.random() < spec.replay:
            return world.base_stage(4, rng, operand_answers=False)
        return vqa.ja_vqa_expert_doc(rng)

    train(model, next_doc, steps=max(1, round(spec.steps * steps_scale)), lr=spec.lr, cfg=recipe.train,
          packer=packer, label=name)
    model.save_pretrained(out / name)
    tokenizer.save_pretrained(out / name)


def write_manifest(out: Path, recipe_digest: str) -> None:
    manifest = {"recipe_hash": recipe_digest,
                "weights": {name: file_sha256(out / name / "model.safetensors")
                            for name in MODELS if (out / name / "model.safetensors").is_file()}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    parser.add_argument("--only", choices=MODELS, action="append", help="build only these (default: all)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="scale every step count (smoke builds)")
    parser.add_argument("--threads", type=int, help="torch threads (default: the recipe's)")
    args = parser.parse_args(argv)
    recipe = OmegaConf.load(RECIPE)
    torch.set_num_threads(args.threads or recipe.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for name in args.only or MODELS:
        if name == "vlm":
            build_vlm(recipe, args.out, args.steps_scale)
        else:
            build_expert(recipe, name, args.out, args.steps_scale)
    write_manifest(args.out, recipe_hash())
    print(f"VLM zoo written to {args.out} in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
