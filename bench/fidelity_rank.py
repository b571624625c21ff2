"""How well each cheap fidelity ranks the fully evaluated trials of a finished zoo study.

    python -m bench.fidelity_rank outputs/bench_fidelity/zoo_mf_seed0          # its per-layer phase
    python -m bench.fidelity_rank RUN_DIR --phase toy_ja_math-uniform --templates " {answer}"
    python -m bench.fidelity_rank outputs/bench_fidelity/vqa_mf_seed0 --phase toy_ja_vqa --templates " {answer}"

Every trial of the phase scored on every search item is merged again at its own parameters and
seed (the study's command, from RUN_DIR/.hydra/config.yaml) and scored by the likelihood of its
first --items search items' references under each --templates (objective option
reference_template); the generated subset's value is read from the trial's own per-item scores
(the first --items). Printed: Spearman's rank correlation of each with the trial's full value,
over all those trials and over the best half (by the full value).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = (" こたえは {answer} です。", " {answer}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fidelity_rank", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--phase", default="toy_ja_math")
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--templates", nargs="+", default=list(TEMPLATES))
    args = parser.parse_args(argv)
    import optuna
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoProcessor, AutoTokenizer

    import objectives
    import zoo  # noqa: F401  (the zoo's data source)
    from evo_core import register_resolvers, spearman, vision_language_sources
    from evo_ps import PSSearch, validate

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    register_resolvers()
    cfg = validate(OmegaConf.load(args.run_dir / ".hydra" / "config.yaml"))
    search = PSSearch(cfg)
    search.check()
    tokenizer = AutoTokenizer.from_pretrained(search.tokenizer_path)
    # a VLM's processor for image items, as the lifecycle gives it
    processor = (AutoProcessor.from_pretrained(search.tokenizer_path)
                 if vision_language_sources({"prompting model": search.tokenizer_path}) else None)
    search.load(tokenizer)
    space = search._space(uniform=args.phase.endswith("-uniform"))
    study = optuna.load_study(study_name=args.phase, storage=f"sqlite:///{args.run_dir / 'study.db'}")
    trials = [t for t in study.trials if t.state.name == "COMPLETE" and not t.user_attrs.get("partial")]
    options = dataclasses.asdict(cfg.objective)
    fidelities: dict[str, list[float]] = {}
    for template in args.templates:
        objective = objectives.build(options["name"], tokenizer=tokenizer, splits={"search": options["search"]},
                                     processor=processor, **{**options["options"], "reference_template": template})
        values = []
        for t in trials:
            search.merger.apply(space.tensor_params(t.params), seed=t.number)
            per_item = objective.likelihood_items(search.pool.model, "search", list(range(args.items)))
            values.append(sum(per_item) / len(per_item))
        fidelities[f"likelihood {template!r}"] = values
    metric = cfg.objective.fitness
    fidelities[f"generated subset ({metric})"] = [sum(t.user_attrs["item_scores"][metric][:args.items]) / args.items
                                                  for t in trials]
    full = [t.values[0] for t in trials]
    top = sorted(range(len(trials)), key=lambda i: -full[i])[: max(3, len(trials) // 2)]
    print(f"{len(trials)} fully evaluated trials of {args.phase} (full {metric} {min(full):.3f}-{max(full):.3f}); "
          f"first {args.items} items\n| cheap fidelity | Spearman, all | Spearman, best half ({len(top)}) |\n|---|---|---|")
    for name, values in fidelities.items():
        print(f"| {name} | {spearman(values, full):.2f} | "
              f"{spearman([values[i] for i in top], [full[i] for i in top]):.2f} |")


if __name__ == "__main__":
    main()
