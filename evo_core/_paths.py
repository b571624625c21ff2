"""Paths: the project root, `${project:...}` in configs, SQLite URLs, the shape of a hub id, and
mergekit's `base+adapter` reference."""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def sqlite_url_in(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def register_resolvers() -> None:
    """`${project:...}` in configs; commands and tests call this before composing one."""
    if not OmegaConf.has_resolver("project"):
        OmegaConf.register_new_resolver("project", project_path)


def project_path(relative: str) -> str:
    """`${project:zoo/models/base}` in configs: a path inside the project, wherever it runs from."""
    return str((PROJECT_ROOT / relative).resolve())


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_hub_id(ref: str | Path) -> bool:
    """`ref` has the shape of a Hugging Face hub id (`owner/name`); whether it exists is not asked."""
    return _HUB_ID.fullmatch(str(ref)) is not None


def split_adapter_ref(ref: str | Path) -> tuple[str, str] | None:
    """mergekit's `base+adapter` reference (a LoRA adapter applied to a model) -> (base, adapter);
    None for anything else (a path that exists as written is a path, whatever it holds)."""
    text = str(ref)
    if "+" not in text or Path(text).expanduser().exists():
        return None
    base, adapter = text.split("+", 1)
    if not base or not adapter or "+" in adapter:
        raise ValueError(f"{text!r} is not BASE+ADAPTER (one model, one '+', one LoRA adapter folder)")
    return base, adapter
