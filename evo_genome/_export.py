"""What a GENOME(+) run leaves behind: PEFT adapter folders (the best individual, each ensemble
member) that `PeftModel.from_pretrained` loads with peft alone, the ensemble's manifest, and the
best individual's model card. Models are named by hub id or folder name (published_name), never
by a path of the machine that ran the search."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from optuna.trial import FrozenTrial

from evo_core import ADAPTER_CONFIG, published_name

from ._adapters import apply_lora

MANIFEST_VERSION = 1


def save_adapter(peft_model: Any, weights: dict[str, torch.Tensor], folder: Path, *, base: str) -> None:
    """`weights` as a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) whose
    config names the base by its published name; peft's own boilerplate card is left out."""
    apply_lora(peft_model, weights)
    peft_model.save_pretrained(folder)
    config_path = folder / ADAPTER_CONFIG
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = published_name(base)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").unlink(missing_ok=True)


def vote_rule(objective: Any) -> dict[str, Any]:
    """How the ensemble picks one output per question, as the objective extracts answers."""
    pattern = getattr(objective, "answer_pattern", None)
    if pattern is not None:
        return {"rule": "majority", "answer_pattern": pattern.pattern,
                "note": "the output whose answer (last match of answer_pattern, NFKC-normalised) most members give; "
                        "ties and no answer: the better-ranked member; no answer at all: the most similar output"}
    return {"rule": "most_similar", "note": "the output with the highest mean difflib similarity to the others"}


def write_manifest(path: Path, members: list, *, objective: Any, base: str) -> None:
    """The ensemble: its members' adapter folders (best first), the vote rule, and the prompt and
    generation settings its answers were scored with."""
    manifest = {
        "version": MANIFEST_VERSION,
        "base": published_name(base),
        "members": [{"adapter": f"member-{k}", "individual": m.name, "trial": m.trial, "search_fitness": m.fitness}
                    for k, m in enumerate(members, 1)],
        "vote": vote_rule(objective),
        "prompt_template": objective.prompt_template,
        "chat_template": bool(getattr(objective, "chat_template", False)),
        "max_new_tokens": objective.max_new_tokens,
        "stop_strings": list(objective.stop_strings),
    }
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def model_card(cfg: Any, best: FrozenTrial, table: dict[str, dict[str, float]]) -> str:
    """The best individual's README.md."""
    import yaml

    g = cfg.genome
    front = yaml.safe_dump({"library_name": "peft", "base_model": published_name(cfg.lora.base),
                            "tags": ["lora", "evolutionary-model-merge", "genome"]}, sort_keys=False)
    how = {"genome": f"GENOME{'+' if g.succession and g.ensemble else ''} (N={g.population}, K={g.iterations}, "
                     f"crossover {g.crossover_rate if g.crossover else 'off'}, mutation "
                     f"{g.individual_mutation_rate if g.mutation else 'off'}/{g.gene_mutation_rate}/sigma {g.sigma}, "
                     f"selection {'alpha ' + format(g.alpha, 'g') if g.selection else 'off'}, succession "
                     f"{'on' if g.succession else 'off'})",
           "experts": "the best single expert on the search split",
           "mixing": "LoraHub-style per-expert mixing weights searched by CMA-ES"}[cfg.mode]
    lines = [f"---\n{front}---", f"# {cfg.study_name}: a LoRA adapter of {published_name(cfg.lora.base)} (seed {cfg.seed})",
             "", f"Evolved without gradients from the LoRA experts {', '.join(cfg.lora.experts)} by {how}: "
             f"trial {best.number}, {cfg.objective.fitness} {best.values[0]:.4f} on the search split.", "",
             "Load it with peft alone:", "", "```python",
             "from peft import PeftModel",
             "from transformers import AutoModelForCausalLM",
             f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(\"{published_name(cfg.lora.base)}\"), "
             "\"best_model\")", "```", "", "## Scores (test split)", "", "| model | metric | value |", "|---|---|---|"]
    lines += [f"| {model} | {metric} | {value:.4f} |" for model, row in table.items() for metric, value in row.items()]
    return "\n".join(lines) + "\n"
