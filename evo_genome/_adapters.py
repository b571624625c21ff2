"""PEFT LoRA adapters as genomes: read a folder, check a population is breedable, and write an
individual's A and B into a live peft model in place.

    adapter = read_adapter("zoo/models/lora/add_en")      # Adapter(name, config, weights)
    check_same_shapes([adapter, other, ...])               # one line naming the first difference
    model = lora_model(base_model, adapter)               # a PeftModel with that adapter's layout
    apply_lora(model, individual_weights)                 # in place: no reload, no new tensors

Weights are keyed as peft saves them (`...q_proj.lora_A.weight`, no adapter name), so an
individual is exactly what `adapter_model.safetensors` holds and exports as it is.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from evo_core import ADAPTER_WEIGHTS, read_adapter_config, read_adapter_weights

# the LoraConfig fields that decide the weights' layout: adapters that differ here cannot be mixed
LAYOUT_FIELDS = ("r", "lora_alpha", "target_modules", "use_rslora", "use_dora", "bias")

Weights = dict[str, torch.Tensor]


@dataclass(frozen=True, eq=False)
class Adapter:
    """One LoRA expert: its folder's name, its adapter_config.json and its A/B tensors (fp32, CPU)."""

    name: str
    folder: Path
    config: dict
    weights: Weights


def read_adapter(folder: str | Path, *, name: str | None = None) -> Adapter:
    """A PEFT LoRA adapter folder; a missing, non-LoRA or corrupt adapter is one clear error (the
    files are read by evo_core, which also takes adapters as pool sources)."""
    folder = Path(folder)
    name = name or folder.name
    config = read_adapter_config(folder, name=name)
    weights = read_adapter_weights(folder, name=name)
    lora = {k: v.float() for k, v in weights.items() if ".lora_A." in k or ".lora_B." in k}
    if not lora:
        raise ValueError(f"adapter {name!r}: {ADAPTER_WEIGHTS} holds no lora_A/lora_B tensors")
    if len(lora) != len(weights):
        other = sorted(set(weights) - set(lora))
        raise ValueError(f"adapter {name!r}: tensors other than LoRA A/B ({other[0]}, ...) are not genes; "
                         "train it without modules_to_save or bias")
    return Adapter(name=name, folder=folder, config=config, weights=lora)


def _layout(config: Mapping) -> dict:
    layout = {field: config.get(field) for field in LAYOUT_FIELDS}
    if isinstance(layout["target_modules"], list):
        layout["target_modules"] = sorted(layout["target_modules"])
    return layout


def check_same_shapes(adapters: Sequence[Adapter]) -> None:
    """The operators mix A with A and B with B: every adapter needs the same rank, targets and
    tensor shapes. Raises one line naming the first adapter that differs and how."""
    if not adapters:
        raise ValueError("an empty population: give at least one LoRA adapter")
    first = adapters[0]
    first_layout = _layout(first.config)
    for other in adapters[1:]:
        layout = _layout(other.config)
        for field in LAYOUT_FIELDS:
            if layout[field] != first_layout[field]:
                raise ValueError(f"adapters {first.name!r} and {other.name!r} differ in {field} "
                                 f"({first_layout[field]} vs {layout[field]}); the operators need equal shapes")
        if set(other.weights) != set(first.weights):
            missing = sorted(set(first.weights) ^ set(other.weights))
            raise ValueError(f"adapters {first.name!r} and {other.name!r} adapt different modules "
                             f"(e.g. {missing[0]}); the operators need equal shapes")
        for key, tensor in first.weights.items():
            if other.weights[key].shape != tensor.shape:
                raise ValueError(f"adapters {first.name!r} and {other.name!r} differ in shape at {key} "
                                 f"({tuple(tensor.shape)} vs {tuple(other.weights[key].shape)}); "
                                 "the operators need equal shapes")


def lora_model(base_model: torch.nn.Module, adapter: Adapter):
    """Wrap a loaded base in a PeftModel with `adapter`'s layout (its weights written in)."""
    from peft import LoraConfig, get_peft_model

    fields = {k: v for k, v in adapter.config.items() if k in LoraConfig.__dataclass_fields__}
    fields["inference_mode"] = True
    model = get_peft_model(base_model, LoraConfig(**fields))
    model.eval()
    apply_lora(model, adapter.weights)
    return model


def live_lora_params(model, adapter_name: str = "default") -> dict[str, torch.nn.Parameter]:
    """The live model's LoRA parameters keyed as peft saves them (adapter name dropped)."""
    tag = f".{adapter_name}."
    return {name.replace(tag, "."): param for name, param in model.named_parameters()
            if (".lora_A" + tag in name or ".lora_B" + tag in name)}


def apply_lora(model, weights: Mapping[str, torch.Tensor], adapter_name: str = "default") -> None:
    """Write an individual's A and B into the live peft model, in place (no reload, no new
    parameters: generation sees it at once). Every LoRA tensor must be given, at its shape."""
    live = live_lora_params(model, adapter_name)
    if set(live) != set(weights):
        extra, missing = sorted(set(weights) - set(live)), sorted(set(live) - set(weights))
        raise ValueError(f"individual does not fit the live model: "
                         f"{'missing ' + missing[0] if missing else 'unknown ' + extra[0]} "
                         f"({len(missing)} missing, {len(extra)} unknown)")
    with torch.no_grad():
        for key, param in live.items():
            if param.shape != weights[key].shape:
                raise ValueError(f"individual's {key} has shape {tuple(weights[key].shape)}, "
                                 f"the live model's {tuple(param.shape)}")
            param.copy_(weights[key])


def base_shapes(base: str | Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a local base model's safetensors, read from the headers only."""
    from safetensors import safe_open

    files = sorted(Path(base).glob("*.safetensors"))
    if not files:
        raise ValueError(f"base {base}: no *.safetensors weights to check the adapters against")
    shapes = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            shapes |= {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    return shapes


def check_fits_base(adapter: Adapter, shapes: Mapping[str, tuple[int, ...]], *, base_name: str) -> None:
    """One line if `adapter` was made for another base: a module the base lacks, or A/B shapes
    that do not match the base weight they adapt (A: rank x in, B: out x rank; the weight: out x in)."""
    for key, tensor in adapter.weights.items():
        module, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
        weight = shapes.get(f"{module}.weight")
        if weight is None:
            raise ValueError(f"adapter {adapter.name!r} is for another base: {base_name} has no module {module} "
                             f"(adapter_config.json names {adapter.config.get('base_model_name_or_path')!r})")
        expected = weight[-1] if kind.startswith("A") else weight[0]
        got = tensor.shape[-1] if kind.startswith("A") else tensor.shape[0]
        if got != expected:
            side = "in" if kind.startswith("A") else "out"
            raise ValueError(f"adapter {adapter.name!r} is for another base: its {key} has {side}_features {got}, "
                             f"{base_name}'s {module} has {expected} (adapter_config.json names "
                             f"{adapter.config.get('base_model_name_or_path')!r})")
