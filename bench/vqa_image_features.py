"""Per-trial time of the VQA fitness with the image features cached (once per study) vs recomputed
every trial, measured side by side in one run.

    .venv/bin/python bench/vqa_image_features.py                 # the zoo VLM pool, 5 trials each
    .venv/bin/python bench/vqa_image_features.py --trials 3 --tower-layers 24 --tower-hidden 1024

A trial of a PS study on a VLM writes only the language model, so the vision tower + projector
give the same features every trial; the objective (objectives/_base.py) computes them on a split's
first score and reuses them while the vision weights are unchanged. Both variants here score the
same merges of the zoo VLM pool (`conf/pool/zoo_vlm.yaml`, the `toy_ja_vqa` objective's search
split): (a) cached: merge + score_items with the features kept; (b) recomputed: the same, with the
features dropped before each trial (what a loop that passes pixel_values to the model per trial
pays). Trials alternate a/b so that machine noise hits both alike; trial 0 of each is a warm-up.

The zoo's vision tower is tiny (2 layers, hidden 64, 16 patches), so the measured saving is
small there. `--tower-layers/--tower-hidden` replace the VLM's vision tower by a random one of
that size (e.g. 24 x 1024: CLIP ViT-L, the LLaVA-1.6 tower, at the zoo's 32x32 images) to show
the share the tower takes when it is not tiny; outputs are then garbage, timings are real.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from evo_core import PROJECT_ROOT, build_objective, load_pool, register_resolvers  # noqa: E402


def _big_tower(model, layers: int, hidden: int) -> None:
    """Swap in a random SigLIP tower of the given size (and a projector that fits it)."""
    from transformers import SiglipVisionConfig
    from transformers.models.siglip.modeling_siglip import SiglipVisionModel

    old = model.config.vision_config
    config = SiglipVisionConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                                num_attention_heads=max(1, hidden // 64), image_size=old.image_size,
                                patch_size=old.patch_size)
    model.model.vision_tower = SiglipVisionModel(config).eval().requires_grad_(False)
    projector = model.model.multi_modal_projector
    projector.linear_1 = torch.nn.Linear(hidden, projector.linear_1.out_features)
    projector.requires_grad_(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--tower-layers", type=int, default=0, help="replace the vision tower (0: keep the zoo's)")
    parser.add_argument("--tower-hidden", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(1)
    register_resolvers()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=toy_ja_vqa"])
    import objectives  # noqa: F401  (registers ja_vqa)
    import zoo  # noqa: F401  (registers the zoo source)
    from transformers import AutoProcessor, AutoTokenizer

    pool = load_pool(base=cfg.pool.base, sources=dict(cfg.pool.sources))
    vlm_path = pool.paths[pool.live_name]
    objective = build_objective(cfg.objective, AutoTokenizer.from_pretrained(vlm_path),
                                processor=AutoProcessor.from_pretrained(vlm_path))
    if args.tower_layers:
        _big_tower(pool.model, args.tower_layers, args.tower_hidden)
    names = pool.source_names
    n_items = len(objective.items("search"))

    def trial(t: int, recompute: bool) -> float:
        w = 0.3 + 0.4 * (t % 3) / 2  # a different merge each trial: the LLM changes, the tower does not
        started = time.perf_counter()
        with torch.no_grad():
            for key, tensor in pool.live_params().items():
                tensor.copy_(pool.base[key] + sum((wt * (pool.sources[s][key] - pool.base[key]))
                                                  for s, wt in zip(names, (w, 1 - w))))
        if recompute:
            objective.generator.features.clear()  # what a loop that passes pixel_values each trial pays
        objective.score_items(pool.model, "search")
        return time.perf_counter() - started

    times: dict[bool, list[float]] = {False: [], True: []}
    for t in range(args.trials + 1):
        for recompute in (False, True):
            seconds = trial(t, recompute)
            if t:  # trial 0 is the warm-up
                times[recompute].append(seconds)
    started = time.perf_counter()
    objective.generator.features.clear()
    objective.image_features(pool.model, "search")
    vision = time.perf_counter() - started
    cached, recomputed = (statistics.mean(times[k]) for k in (False, True))
    tower = (f"random tower {args.tower_layers} x {args.tower_hidden}" if args.tower_layers
             else "the zoo VLM's own tower")
    print(f"VQA trial, {n_items} search items, {tower}, 1 thread, {args.trials} trials each (mean, stdev):")
    print(f"  (a) features cached:     {cached:7.3f} s  (stdev {statistics.stdev(times[False]):.3f})")
    print(f"  (b) features recomputed: {recomputed:7.3f} s  (stdev {statistics.stdev(times[True]):.3f})")
    print(f"  vision tower + projector alone, all items: {vision:.3f} s")
    print(f"  ratio (b)/(a): {recomputed / cached:.2f}x")


if __name__ == "__main__":
    main()
