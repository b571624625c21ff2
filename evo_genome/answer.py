"""Answer questions with a GENOME+ ensemble: each member (a PEFT LoRA adapter on the base) answers,
the manifest's vote rule picks one answer per question.

    python -m evo_genome.answer RUN_DIR/ensemble/manifest.json "Q text" ["another question" ...]
    python -m evo_genome.answer MANIFEST --base zoo/models/base "..."   # where the base is (default: the manifest's name)

Prints one answer per question, one line each (newlines inside an answer shown as \\n). The
prompt, greedy generation and vote are those the run's test table scored the ensemble with.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from pathlib import Path

import torch

from ._adapters import apply_lora, lora_model, read_adapter
from ._operators import ensemble_answer


def extractor(vote: dict):
    """The answer an output gives under the vote rule (None: no answer); None for free text."""
    if vote.get("rule") != "majority":
        return None
    pattern = re.compile(vote["answer_pattern"])

    def extract(output: str) -> str | None:
        matches = pattern.findall(unicodedata.normalize("NFKC", output).strip())
        return unicodedata.normalize("NFKC", matches[-1]).strip() if matches else None
    return extract


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not an ensemble manifest ({err})") from None
    missing = [k for k in ("base", "members", "vote", "prompt_template", "max_new_tokens", "stop_strings")
               if k not in manifest]
    if missing:
        raise ValueError(f"{path}: not an ensemble manifest (no {', '.join(missing)})")
    return manifest


def answer(manifest_path: str | Path, questions: list[str], *, base: str | None = None) -> list[str]:
    """Each question's ensemble answer (the chosen member output)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from objectives import greedy_generate

    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    if manifest.get("chat_template"):
        raise ValueError(f"{manifest_path}: chat-template prompts are not supported by this command")
    adapters = [read_adapter(manifest_path.parent / m["adapter"]) for m in manifest["members"]]
    base = base or manifest["base"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = lora_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapters[0])
    prompts = [manifest["prompt_template"].replace("{question}", q) for q in questions]
    per_member = []
    for adapter in adapters:
        apply_lora(model, adapter.weights)
        per_member.append(greedy_generate(model.get_base_model(), tokenizer, prompts,
                                          max_new_tokens=manifest["max_new_tokens"],
                                          stop_strings=manifest["stop_strings"]))
    extract = extractor(manifest["vote"])
    return [ensemble_answer(list(outputs), extract=extract) for outputs in zip(*per_member)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("questions", nargs="+")
    parser.add_argument("--base", help="the base model (folder or hub id); default: the manifest's")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        for text in answer(args.manifest, args.questions, base=args.base):
            print(text.replace("\n", "\\n"))
    except (ValueError, OSError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
