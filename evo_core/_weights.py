"""Small helpers on live models and paths shared by both searches."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def use_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Overwrite a live model's parameters in place (e.g. to score one source model as it is)."""
    for key, param in model.named_parameters():
        param.copy_(weights[key])


def sqlite_url_in(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def register_resolvers() -> None:
    """`${project:...}` in configs; commands and tests call this before composing one."""
    if not OmegaConf.has_resolver("project"):
        OmegaConf.register_new_resolver("project", project_path)


def project_path(relative: str) -> str:
    """`${project:zoo/models/base}` in configs: a path inside the project, wherever it runs from."""
    return str((PROJECT_ROOT / relative).resolve())
