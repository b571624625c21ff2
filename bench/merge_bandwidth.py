"""Per-apply cost of the in-memory merge vs the memory-bandwidth bound, on random Qwen3 models.

    .venv/bin/python bench/merge_bandwidth.py                      # tiny + ~125M params, fp32
    .venv/bin/python bench/merge_bandwidth.py --sizes tiny --methods dare_ties --repeats 5

Each size builds a random Qwen3 base and `--sources` "fine-tunes" (base + noise) in memory (no
disk), then times `InMemoryMerger.apply` per method against a plain torch copy of the bytes the
merge has to read (base + one task vector per source, each copied into the live weights): the
bandwidth bound. Prints one line per (size, method): milliseconds per apply, the ratio, and the merger's
one-off setup (task vectors; for ties also |d| sorted once, which makes each apply's thresholds lookups).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evo_core import ModelPool  # noqa: E402
from evo_ps import InMemoryMerger, merge_method  # noqa: E402

SIZES = {  # hidden, layers, intermediate, vocab, heads, kv heads
    "tiny": dict(hidden_size=64, num_hidden_layers=4, intermediate_size=128, vocab_size=283,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "125m": dict(hidden_size=768, num_hidden_layers=12, intermediate_size=2048, vocab_size=32000,
                 num_attention_heads=12, num_key_value_heads=4, head_dim=64),
}


def random_pool(size: str, n_sources: int) -> ModelPool:
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(tie_word_embeddings=False, **SIZES[size])).eval().requires_grad_(False)
    base = {k: p.detach().clone() for k, p in model.named_parameters()}
    sources = {f"s{i}": {k: v + 0.01 * torch.randn_like(v) for k, v in base.items()} for i in range(n_sources)}
    return ModelPool(model=model, tokenizer=None, config=model.config, base=base, sources=sources,
                     paths={}, base_name="base", num_layers=model.config.num_hidden_layers,
                     dtype=torch.float32, device=torch.device("cpu"))


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def uniform_params(names, sources, method, density: float):
    values = {"weight": {s: 0.5 for s in sources}, "density": {s: density for s in sources}, "t": 0.3}
    return {k: {key: values[key] for key in method.searched} for k in names}


def copy_bound_ms(merger: InMemoryMerger, live: dict, repeats: int) -> float:
    """The bandwidth bound of one apply: copy what it reads (base + one task vector per source)
    into the live weights."""
    inputs = [merger._base] + merger._deltas

    def copy():
        with torch.no_grad():
            for tensors in inputs:
                for k, t in tensors.items():
                    live[k].view(-1).copy_(t)

    return timed(copy, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "125m"], choices=sorted(SIZES))
    parser.add_argument("--methods", nargs="+", default=["task_arithmetic", "dare_ties", "ties"])
    parser.add_argument("--sources", type=int, default=3)
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=None, help="chunk_elements (default: the merger's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    for size in args.sizes:
        pool = random_pool(size, args.sources)
        live = pool.live_params()
        n_params = sum(t.numel() for t in pool.base.values())
        for name in args.methods:
            method = merge_method(name)
            started = time.perf_counter()
            merger = InMemoryMerger(pool=pool, method=method, chunk_elements=args.chunk)
            setup_s = time.perf_counter() - started  # once per study: task vectors, ties' sorted |d|
            params = uniform_params(pool.param_names, pool.source_names, method, args.density)
            merge_ms = timed(lambda: merger.apply(params, seed=1), args.repeats)
            copy_ms = copy_bound_ms(merger, live, args.repeats)
            print(f"{size:>5} {n_params / 1e6:7.1f}M params  {name:<16} sources={args.sources} "
                  f"density={args.density}  merge {merge_ms:8.1f} ms  copy bound {copy_ms:8.1f} ms  "
                  f"ratio {merge_ms / copy_ms:5.2f}  (setup once {setup_s:.1f} s)")
            del merger


if __name__ == "__main__":
    main()
