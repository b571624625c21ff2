"""Measure the VLM zoo's preconditions with the fitness the VQA search maximises: the VLM, the
Japanese LLM put into the VLM, uniform task-arithmetic merges over a grid, and hand-made
per-layer merges, on the ja_vqa splits.

    python -m zoo.vlm_report                 # the precondition table (test split), 3-10 min on 2 busy cores
    python -m zoo.vlm_report --out t.json    # also write it (bench/results.py renders docs/zoo-vqa.md from it)

Nothing here is the report's own: it is what `python -m evo_ps +experiment=toy_ja_vqa` runs.
The pool and the objective come from that experiment's composed config (conf/pool/zoo_vlm.yaml,
conf/objective/zoo_ja_vqa.yaml): `load_pool` puts the sources' LLMs into the live VLM, and
`build_objective` builds the `ja_vqa` objective with the config's prompt template, generation
settings and language detector (objective.options), prompted through the VLM's processor. So rougeL and rougeL_ja
are the objective's (objectives/_rouge.py), and rougeL_ja is the study's fitness. "Japanese %" is
the share of outputs the objective's detector calls Japanese (P(ja) >= objectives.JA_GATE).

Merges are evo_ps's InMemoryMerger with task_arithmetic (base + sum_s w_s (source_s - base), no
densities), over the uniform space (one weight per source) or the per-layer one (a weight per
source and group: embed, L00..L03, head), as build_space defines them for the search. The best
uniform merge of the grid and the best hand-made merge are picked on the search split and scored
on the test split.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoProcessor, AutoTokenizer

import objectives
from evo_core import (PROJECT_ROOT, ObjectiveConfig, build_objective, load_pool, register_resolvers,
                      vision_language_sources)
from evo_ps import InMemoryMerger, build_space, merge_method

EXPERIMENT = "toy_ja_vqa"
UNIFORM_GRID = (0.25, 0.5, 0.75, 1.0)
# hand-made per-layer merges: weights per group (embed, L00-L03, head) of the VLM's LLM / the expert
HAND_MADE = {
    # the pattern the per-layer search found: the mean of toy_ja_vqa's best weights over seeds 0-2
    # (densities left out). The VLM's layers 1-2 kept, its head (its English answer habit) turned
    # down; the expert's layer 1 (where the VLM reads the image) turned down, its other layers kept
    "the search's pattern": ([0.6, 0.55, 0.86, 0.83, 0.49, 0.3], [0.62, 0.87, 0.39, 0.86, 0.85, 0.51]),
    "vision 0-1, Japanese everywhere": ([1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]),
    "Japanese early, vision late": ([0.25, 0.25, 0.5, 1, 1, 1], [1, 1, 1, 0.5, 0.25, 0.5]),
}
EN_VQA_TEST = {"source": "zoo", "task": "en_vqa", "split": "test"}
Row = dict[str, float]


def study_config(experiment: str = EXPERIMENT) -> tuple[dict[str, Any], ObjectiveConfig]:
    """The pool (base, sources, dtype, device) and objective of `python -m evo_ps +experiment=NAME`,
    composed by Hydra from conf/ as the search composes them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    register_resolvers()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={experiment}"])
    pool = OmegaConf.to_container(cfg.pool, resolve=True)
    objective = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ObjectiveConfig), cfg.objective))
    return pool, objective


class VLMReport:
    """The experiment's pool (the live VLM), its ja_vqa objective (search and test splits), the
    same objective on the VLM's own English task (en_vqa test), and a task-arithmetic merger."""

    def __init__(self, experiment: str = EXPERIMENT):
        pool_cfg, self.spec = study_config(experiment)
        [vlm] = vision_language_sources(pool_cfg["sources"])  # it prompts the models, as in the search
        tokenizer = AutoTokenizer.from_pretrained(pool_cfg["sources"][vlm])
        processor = AutoProcessor.from_pretrained(pool_cfg["sources"][vlm])
        self.pool = load_pool(base=pool_cfg["base"], sources=pool_cfg["sources"], dtype=pool_cfg["dtype"],
                              device=pool_cfg["device"], tokenizer=tokenizer)
        self.objective = build_objective(self.spec, tokenizer, processor=processor)
        self.en_objective = build_objective(dataclasses.replace(self.spec, test=EN_VQA_TEST), tokenizer,
                                            splits=("test",), processor=processor)
        self.detector = objectives.language_detector(self.spec.options["language_detector"])
        method = merge_method("task_arithmetic")
        self.merger = InMemoryMerger(pool=self.pool, method=method)
        self.spaces = {uniform: build_space(method=method, sources=self.pool.source_names,
                                            tensor_names=self.pool.param_names, num_layers=self.pool.num_layers,
                                            uniform=uniform) for uniform in (True, False)}

    @property
    def vlm(self) -> str:
        return self.pool.live_name

    @property
    def expert(self) -> str:
        [expert] = [s for s in self.pool.source_names if s != self.vlm]
        return expert

    def use(self, model: str | dict[str, float] | dict[str, list[float]]) -> None:
        """The live VLM with a source's LLM (by name), or a task-arithmetic merge: {source: weight}
        (uniform) or {source: [weight per group]} (per layer)."""
        if isinstance(model, str):
            self.pool.use(self.pool.sources[model])
            return
        per_layer = any(isinstance(w, (list, tuple)) for w in model.values())
        space = self.spaces[not per_layer]
        values = {}
        for source, weights in model.items():
            weights = weights if per_layer else [weights]
            if len(weights) != len(space.groups):
                raise ValueError(f"{source}: {len(weights)} weights for the {len(space.groups)} groups {space.groups}")
            values.update({f"{group}.{source}.weight": float(w) for group, w in zip(space.groups, weights)})
        self.merger.apply(space.tensor_params(values))

    def score(self, model: str | dict, split: str = "test", *, task: str = "ja_vqa") -> Row:
        """rougeL, rougeL_ja (the objective's, in [0, 1]) and the Japanese share of the outputs."""
        if task not in ("ja_vqa", "en_vqa"):
            raise ValueError(f"unknown task {task!r}; known: ja_vqa, en_vqa")
        objective = self.objective if task == "ja_vqa" else self.en_objective
        self.use(model)
        outputs = objective.generate(self.pool.model, split)
        scores = objective.score_outputs(outputs, split)
        return {"rougeL": scores["rougeL"], "rougeL_ja": scores["rougeL_ja"],
                "japanese": sum(self.detector(o) >= objectives.JA_GATE for o in outputs) / len(outputs)}

    def uniform_merges(self) -> dict[str, dict[str, float]]:
        return {uniform_name(self.vlm, a, self.expert, b): {self.vlm: a, self.expert: b}
                for a in UNIFORM_GRID for b in UNIFORM_GRID}

    def hand_made_merges(self) -> dict[str, dict[str, list[float]]]:
        return {f"per-layer {name}": {self.vlm: v, self.expert: e} for name, (v, e) in HAND_MADE.items()}


def uniform_name(vlm: str, a: float, expert: str, b: float) -> str:
    return f"uniform {vlm} {a}, {expert} {b}"


def vlm_table(report: VLMReport | None = None) -> dict[str, Any]:
    """{"test": {row: scores}, "search": {candidate merge: scores}, "sources": [vlm, expert]}."""
    report = report or VLMReport()
    vlm, expert = report.vlm, report.expert
    search: dict[str, Row] = {}
    test = {f"{vlm}, its own English task (en_vqa)": report.score(vlm, task="en_vqa"),
            vlm: report.score(vlm), f"{expert} in the VLM (cannot see)": report.score(expert)}
    for candidates in (report.uniform_merges(), report.hand_made_merges()):
        for name, weights in candidates.items():
            search[name] = report.score(weights, "search")
            print(f"search | {name} | " + " ".join(f"{k} {100 * v:.1f}" for k, v in search[name].items()), flush=True)
        best = max(candidates, key=lambda n: search[n]["rougeL_ja"])
        test[f"{best} (best on search)"] = report.score(candidates[best])
    return {"test": test, "search": search, "sources": [vlm, expert]}


def markdown(table: dict[str, Any]) -> str:
    """The test rows, the uniform grid's and the hand-made merges' search rougeL_ja (in %)."""
    vlm, expert = table["sources"]
    search = table["search"]
    lines = ["| model (ja_vqa test, n=300, unless said) | rougeL | rougeL_ja | Japanese % |", "|---|---|---|---|"]
    lines += [f"| {name} | {100 * s['rougeL']:.1f} | {100 * s['rougeL_ja']:.1f} | {100 * s['japanese']:.0f} |"
              for name, s in table["test"].items()]
    best = max((n for n in search if n.startswith("uniform ")), key=lambda n: search[n]["rougeL_ja"])
    lines += ["", f"Search split, rougeL_ja. Rows give the {vlm} weight, columns the {expert} weight.", "",
              f"| {vlm} \\ {expert} | " + " | ".join(str(b) for b in UNIFORM_GRID) + " |",
              "|---" * (len(UNIFORM_GRID) + 1) + "|"]
    for a in UNIFORM_GRID:
        cells = []
        for b in UNIFORM_GRID:
            name = uniform_name(vlm, a, expert, b)
            cell = f"{100 * search[name]['rougeL_ja']:.1f}"
            cells.append(f"**{cell}**" if name == best else cell)
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines += ["", "The hand-made per-layer merges on search, rougeL_ja:"]
    lines += [f"- {name.removeprefix('per-layer ')}: {100 * s['rougeL_ja']:.1f}"
              for name, s in search.items() if name.startswith("per-layer ")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    table = vlm_table()
    print(markdown(table))
    if args.out:
        args.out.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
