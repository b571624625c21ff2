"""Build the embedded zoo: a tiny Qwen3 base trained on the bilingual world, then three experts.

    python -m zoo.build                       # everything, into zoo/models/ (~25 min on 2 cores)
    python -m zoo.build --only math_wiz       # one expert, from the committed base
    python -m zoo.build --out /tmp/zoo --steps-scale 0.01   # a quick smoke build

Deterministic for a seed on one machine (fp32 CPU kernels). Writes `manifest.json` beside the
models: the recipe hash (recipe + world + tokenizer + builder sources) and each weight file's
sha256, which tests/zoo check against the committed files.
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
from safetensors.torch import load_file
from transformers import Qwen3Config, Qwen3ForCausalLM

from zoo import world
from zoo.tokenizer import build_tokenizer

ZOO_DIR = Path(__file__).resolve().parent
RECIPE = ZOO_DIR / "recipe.yaml"
MODELS_DIR = ZOO_DIR / "models"
HASHED_SOURCES = ("recipe.yaml", "world.py", "tokenizer.py", "build.py")
IGNORE = -100  # label of tokens that carry no loss


def recipe_hash() -> str:
    digest = hashlib.sha256()
    for name in HASHED_SOURCES:
        digest.update(name.encode())
        digest.update((ZOO_DIR / name).read_bytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Packer:
    """Packs whole documents (never cut) into fixed-length rows; loss only on `target` tokens."""

    def __init__(self, *, seq_len: int, eos_id: int, pad_id: int):
        self.vocab = build_tokenizer().get_vocab()
        self.seq_len, self.eos_id, self.pad_id = seq_len, eos_id, pad_id

    def encode(self, doc: world.Document) -> tuple[list[int], list[int]]:
        prompt = [self.vocab[c] for c in doc.prompt]
        target = [self.vocab[c] for c in doc.target] + [self.eos_id]
        return prompt + target, [IGNORE] * len(prompt) + target

    def batch(self, next_doc, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((rows, self.seq_len), self.pad_id, dtype=torch.long)
        labels = torch.full((rows, self.seq_len), IGNORE, dtype=torch.long)
        for row in range(rows):
            used = 0
            while True:
                doc_ids, doc_labels = self.encode(next_doc())
                assert len(doc_ids) <= self.seq_len, "a document longer than a row"
                if used + len(doc_ids) > self.seq_len:
                    break  # this document is dropped, not cut: rows end in padding instead
                ids[row, used:used + len(doc_ids)] = torch.tensor(doc_ids)
                labels[row, used:used + len(doc_ids)] = torch.tensor(doc_labels)
                used += len(doc_ids)
        return ids, labels


def train(model, next_doc, *, steps: int, lr: float, cfg, packer: Packer, label: str) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    warmup = min(cfg.warmup_steps, max(1, steps // 10))

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    start = time.time()
    for step in range(steps):
        ids, labels = packer.batch(next_doc, cfg.batch_size)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"[{label}] step {step + 1}/{steps} loss {loss.item():.3f} "
                  f"({time.time() - start:.0f}s)", flush=True)
    model.eval()


def save(model, out: Path, tokenizer) -> None:
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_base(recipe, out: Path, steps_scale: float, tokenizer, packer: Packer) -> None:
    torch.manual_seed(recipe.seed)
    config = Qwen3Config(vocab_size=len(tokenizer), tie_word_embeddings=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, **recipe.model)
    model = Qwen3ForCausalLM(config)
    rng = random.Random(f"base-{recipe.seed}")
    for stage in recipe.base_stages:
        train(model, lambda: world.base_stage(stage.stage, rng), steps=max(1, round(stage.steps * steps_scale)),
              lr=stage.lr, cfg=recipe.train, packer=packer, label=f"base stage {stage.stage}")
    save(model, out / "base", tokenizer)


def build_expert(recipe, name: str, out: Path, steps_scale: float, tokenizer, packer: Packer) -> None:
    spec = recipe.experts[name]
    torch.manual_seed(spec.seed)
    model = Qwen3ForCausalLM.from_pretrained(out / "base", dtype=torch.float32)
    rng = random.Random(f"{name}-{spec.seed}")

    def next_doc() -> world.Document:
        if rng.random() < spec.replay:
            return world.base_stage(recipe.base_stages[-1].stage, rng, operand_answers=False)
        return world.expert_doc(name, rng)

    train(model, next_doc, steps=max(1, round(spec.steps * steps_scale)), lr=spec.lr, cfg=recipe.train,
          packer=packer, label=name)
    save(model, out / name, tokenizer)


def write_manifest(out: Path, recipe_digest: str) -> None:
    manifest = {"recipe_hash": recipe_digest,
                "weights": {d.name: file_sha256(d / "model.safetensors")
                            for d in sorted(out.iterdir()) if (d / "model.safetensors").is_file()}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    parser.add_argument("--only", choices=["base", *world.EXPERTS], action="append",
                        help="build only these models (default: all)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="scale every step count (smoke builds)")
    args = parser.parse_args(argv)
    recipe = OmegaConf.load(RECIPE)
    torch.set_num_threads(recipe.train.threads)
    tokenizer = build_tokenizer()
    packer = Packer(seq_len=recipe.train.seq_len, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
    wanted = args.only or ["base", *world.EXPERTS]
    args.out.mkdir(parents=True, exist_ok=True)
    if "base" in wanted:
        build_base(recipe, args.out, args.steps_scale, tokenizer, packer)
    elif not (args.out / "base" / "model.safetensors").is_file():
        raise SystemExit(f"error: no base model in {args.out}; build it first (--only base)")
    for name in world.EXPERTS:
        if name in wanted:
            build_expert(recipe, name, args.out, args.steps_scale, tokenizer, packer)
    write_manifest(args.out, recipe_hash())
    print(f"zoo written to {args.out}")


if __name__ == "__main__":
    main()
