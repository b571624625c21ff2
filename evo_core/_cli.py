"""The shared shape of both command lines: validate the composed config, run, fail in one line."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf


def run_cli(cfg: DictConfig, *, validate: Callable[[DictConfig], Any], run: Callable[[Any, str], Any]) -> None:
    """`run(validate(cfg), resolved_yaml)`; bad input exits non-zero with one `error: ...` line."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model would bury the study's output
    try:
        run(validate(cfg), OmegaConf.to_yaml(cfg))
    except (ValueError, FileNotFoundError, KeyError) as err:
        # bad input: one line, non-zero exit, nothing half-started
        sys.exit(f"error: {err}")
