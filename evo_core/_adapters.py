"""PEFT LoRA adapters: their files read with one-line errors, and adapters as pool sources.

A pool source may be a LoRA adapter instead of a model, in one line of config:

    sources:
      add_en: zoo/models/lora/add_en                     # a folder with adapter_config.json
      count_ja: zoo/models/base+zoo/models/lora/count_ja  # mergekit's BASE+ADAPTER, the base named

A folder's base is its adapter_config.json `base_model_name_or_path`: the pool's base when it names
it (the same folder, or the same name: `zoo/models/base` written by the trainer and the pool's
`.../zoo/models/base`, or hub id `owner/X` and a local copy in a folder `X`), else a local folder,
else a hub id, as any source. `BASE+ADAPTER` names the base itself (`${pool.base}+ADAPTER` in a
config: the pool's base, whatever the adapter's config says); there ADAPTER may be a hub id too
(its snapshot in the HF cache, downloaded if need be; a bare hub id is a model, never asked whether
it is an adapter). `resolve_adapter_sources` writes
every adapter source as `BASE+ADAPTER`: that string is the source's path from then on (the study's
signature, the mergekit YAML, which mergekit reads as the same thing), its fingerprint covers
the adapter's bytes and its base's (_fingerprint.py), and what is published names both by hub id
or folder name (`base+add_en`, _publish.py).

The pool (_pool.py) applies each adapter once, at load: a copy of its base in the pool's dtype,
`PeftModel.from_pretrained(...).merge_and_unload()`; the result is a source like any other.
`check_adapter_sources` fails in one line before any weight is read: a missing or corrupt
adapter_model.safetensors, a peft type other than LoRA, an adapter whose tensors do not fit its
base (an adapter for another base), a base whose shapes differ from the pool base's.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from ._model_checks import check_same_shapes
from ._paths import looks_like_hub_id, split_adapter_ref
from ._publish import published_name
from ._safetensors import header_shapes, safetensors_header
from ._vlm import vision_language_sources

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # how peft names an adapted model's tensors in adapter_model.safetensors


def is_adapter_folder(ref: str | Path) -> bool:
    return (Path(ref).expanduser() / ADAPTER_CONFIG).is_file()


def read_adapter_config(folder: str | Path, *, name: str) -> dict:
    """A LoRA adapter folder's adapter_config.json, once both its files are there."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"adapter {name!r}: {folder} is not a folder (a PEFT LoRA adapter folder holds "
                         f"{ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    for file in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / file).is_file():
            raise ValueError(f"adapter {name!r}: no {file} in {folder}")
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"adapter {name!r}: {ADAPTER_CONFIG} is not JSON ({err})") from None
    if config.get("peft_type") != "LORA":
        raise ValueError(f"adapter {name!r}: peft_type {config.get('peft_type')!r}, expected 'LORA'")
    return config


def read_adapter_weights(folder: str | Path, *, name: str) -> dict[str, torch.Tensor]:
    """Every tensor of a folder's adapter_model.safetensors, as saved; corrupt is one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(Path(folder).expanduser() / ADAPTER_WEIGHTS)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"adapter {name!r}: corrupt {ADAPTER_WEIGHTS} ({err})") from None


def adapter_shapes(folder: str | Path, *, name: str) -> dict[str, tuple[int, ...]]:
    """The adapter's tensor shapes from its safetensors header (no weight read), the file checked
    complete: a copy cut short or not safetensors at all is `corrupt`, in one line."""
    try:
        _, header = safetensors_header(Path(folder).expanduser() / ADAPTER_WEIGHTS)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"adapter {name!r}: corrupt {ADAPTER_WEIGHTS} ({err})") from None
    return {key: tuple(entry["shape"]) for key, entry in header.items() if key != "__metadata__"}


def _names_pool_base(ref: str, pool_base: str | Path) -> bool:
    """The adapter's recorded base is the pool's base: the same folder when both are here, else the
    same name (a trainer's relative path or hub id, and the pool's copy of it)."""
    mine, pools = Path(ref).expanduser(), Path(pool_base).expanduser()
    if mine.is_dir() and pools.is_dir():
        return mine.resolve() == pools.resolve()
    return published_name(ref).rsplit("/", 1)[-1] == published_name(pool_base).rsplit("/", 1)[-1]


def resolve_adapter_sources(sources: Mapping[str, str | Path], *, base: str | Path) -> dict[str, str]:
    """Every source as a string: models as given, adapters as `BASE+ADAPTER` (module docstring).
    A folder's base comes from its adapter_config.json; one that names no base found here fails in
    one line saying how to name it."""
    if is_adapter_folder(base) or split_adapter_ref(base):
        raise ValueError(f"pool.base {base} is a LoRA adapter; the base is a model (adapters are sources)")
    resolved = {}
    for name, ref in sources.items():
        split = split_adapter_ref(ref)
        if split is not None:
            adapter_base, folder = split
            if not Path(folder).expanduser().exists() and looks_like_hub_id(folder):
                folder = _hub_adapter(name, folder)
            read_adapter_config(folder, name=name)
            resolved[name] = f"{adapter_base}+{folder}"
        elif is_adapter_folder(ref):
            recorded = read_adapter_config(ref, name=name).get("base_model_name_or_path")
            resolved[name] = f"{_adapter_base(name, ref, recorded, base)}+{ref}"
        else:
            resolved[name] = str(ref)
    return resolved


def _hub_adapter(name: str, repo_id: str) -> str:
    """A hub adapter's two files: its snapshot in the HF cache (downloaded if not there and the hub
    can be reached), named back to its hub id by published_name."""
    import huggingface_hub

    try:
        return huggingface_hub.snapshot_download(repo_id, allow_patterns=[ADAPTER_CONFIG, ADAPTER_WEIGHTS])
    except Exception as err:  # offline and not cached, unknown, gated: all mean "not to be had here"
        raise ValueError(f"adapter {name!r}: hub adapter {repo_id!r} cannot be had here ({type(err).__name__}); "
                         f"download it (hf download {repo_id} --local-dir DIR) and write BASE+DIR") from None


def _adapter_base(name: str, folder: str | Path, recorded: str | None, pool_base: str | Path) -> str:
    how = f"name it: pool.sources.{name}=BASE+{folder} (the pool's base: '${{pool.base}}+{folder}')"
    if not recorded:
        raise ValueError(f"adapter {name!r}: its {ADAPTER_CONFIG} names no base_model_name_or_path; {how}")
    if _names_pool_base(recorded, pool_base):
        return str(pool_base)
    if Path(recorded).expanduser().is_dir():
        return str(Path(recorded).expanduser().resolve())
    if looks_like_hub_id(recorded):
        return recorded
    raise ValueError(f"adapter {name!r}: its base {recorded!r} ({ADAPTER_CONFIG}) is not the pool's base, a local "
                     f"folder or a hub id; {how}")


def adapter_sources(sources: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The resolved sources that are adapters: name -> (base, adapter folder)."""
    return {name: split for name, ref in sources.items() if (split := split_adapter_ref(ref)) is not None}


def same_model(ref: str | Path, other: str | Path) -> bool:
    """Two references to one model: the same string, or the same local folder."""
    one, two = Path(ref).expanduser(), Path(other).expanduser()
    return str(ref) == str(other) or (one.is_dir() and two.is_dir() and one.resolve() == two.resolve())


def check_adapter_sources(sources: Mapping[str, str], *, base: str | Path) -> None:
    """Resolved adapter sources can be applied, checked from files and safetensors headers only,
    each in one line: the adapter files whole, its base a text model with the pool base's tensor
    shapes, and every A and B fitting the base's weight it adapts (an adapter for another base)."""
    base_shapes = header_shapes("base", str(base))
    for name, (adapter_base, folder) in adapter_sources(sources).items():
        config = read_adapter_config(folder, name=name)
        shapes = adapter_shapes(folder, name=name)
        if vision_language_sources({name: adapter_base}):
            raise ValueError(f"adapter {name!r}: its base {adapter_base} is a vision-language model; an adapter "
                             f"source is applied to a text model (the pool's base or a fine-tune of it)")
        on_pool_base = same_model(adapter_base, base)
        own_shapes = base_shapes if on_pool_base else header_shapes(name, adapter_base)
        if own_shapes is None:  # a hub base not downloaded: PeftModel.from_pretrained checks it at load
            continue
        if not on_pool_base and base_shapes is not None:
            try:
                check_same_shapes({"base": base_shapes, name: own_shapes})
            except ValueError as err:
                raise ValueError(f"adapter {name!r}: its base {adapter_base} does not fit the pool's base "
                                 f"({err})") from None
        _check_fits(name, config, shapes, own_shapes, adapter_base)


def _check_fits(name: str, config: Mapping, shapes: Mapping[str, tuple[int, ...]],
                base_shapes: Mapping[str, tuple[int, ...]], base: str) -> None:
    """Each lora_A [r, in] and lora_B [out, r] against the [out, in] weight it adapts (embeddings:
    lora_embedding_A [r, rows], lora_embedding_B [dim, r]); other saved tensors (modules_to_save)
    must have the base's shape."""
    rank = config.get("r")
    for key, shape in shapes.items():
        module, kind = _adapted(key)
        target = f"{module}.weight" if kind else module
        other = f"an adapter for another base? its config names {config.get('base_model_name_or_path')!r}"
        if target not in base_shapes:
            raise ValueError(f"adapter {name!r}: {key} adapts {target}, which its base {published_name(base)} "
                             f"lacks ({other})")
        weight = base_shapes[target]
        if kind is None:
            fits = tuple(shape) == tuple(weight)
        elif len(shape) != 2 or len(weight) != 2:
            fits = False
        else:
            out_dim, in_dim = (weight[1], weight[0]) if "embedding" in kind else (weight[0], weight[1])
            fits = shape[1] == in_dim if kind.endswith("A") else shape[0] == out_dim
        if not fits:
            raise ValueError(f"adapter {name!r}: {key} has shape {tuple(shape)} (rank {rank}), which does not fit "
                             f"{target} {tuple(weight)} of its base {published_name(base)} ({other})")


def _adapted(key: str) -> tuple[str, str | None]:
    """A saved adapter tensor's key -> (the base tensor or module it belongs to, its LoRA kind or None)."""
    key = key.removeprefix(PEFT_PREFIX)
    for kind in ("lora_embedding_A", "lora_embedding_B", "lora_A", "lora_B"):
        marker = f".{kind}"
        if marker in key:
            return key.split(marker, 1)[0], kind
    return key, None


@torch.no_grad()
def merge_adapter(name: str, model: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
    """`model` (a loaded base, changed in place and returned) with the adapter merged into its
    weights by peft, in the model's dtype: what `PeftModel.from_pretrained(model, folder)
    .merge_and_unload()` gives."""
    from peft import PeftModel

    try:
        adapted = PeftModel.from_pretrained(model, str(Path(folder).expanduser()), is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"adapter {name!r}: does not fit its base ({first[:300]})") from None
    return adapted.merge_and_unload().eval().requires_grad_(False)
