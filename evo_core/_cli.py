"""The one command-line shape of every search: Hydra composes the config, the lifecycle runs it.

    # evo_ps/__main__.py
    cli_main(conf_dir=CONF_DIR, validate=validate, search=PSSearch)

Process-wide settings (Optuna's verbosity, the `${project:...}` config resolver, no progress bars)
are made here, when a command starts, not on import. Bad input exits non-zero with one `error:` line.

The error boundary: an expected failure (ValueError, FileNotFoundError, KeyError: bad config or
data, missing models) is that one line; any other OSError (an unwritable or read-only path) is one
line naming the path; a full disk (ENOSPC, or a library's words for it, anywhere in the chain of
causes) is `error: no space left on <run_dir> (...)`; anything else is a bug or an environment
fault: its last few frames, then the same kind of line, so a log still ends in one greppable
`error:`.
"""
from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ._config import check_overrides
from ._files import NoSpaceLeft, no_space_message, quiet_full_disk_in_threads
from ._paths import register_resolvers

TRACEBACK_FRAMES = 4  # the innermost frames of an unexpected error's traceback


def run_cli(cfg: DictConfig, *, validate: Callable[[DictConfig], Any], search: Callable[[Any], Any]) -> None:
    """`run_study(validate(cfg), search(typed))`; bad input exits non-zero with one `error: ...` line."""
    from ._lifecycle import run_study

    try:
        typed = validate(cfg)
        run_study(typed, search(typed), resolved=OmegaConf.to_yaml(cfg))
    except NoSpaceLeft as err:  # the trial loop stopped on a full disk
        sys.exit(error_line(no_space_message(err, where=cfg.get("run_dir"))))
    except (ValueError, FileNotFoundError, KeyError) as err:
        # bad input: one line, non-zero exit, nothing half-started
        sys.exit(error_line(str(err)))
    except OSError as err:
        sys.exit(error_line(no_space_message(err, where=cfg.get("run_dir")) or os_error_message(err)))
    except Exception as err:
        if full_disk := no_space_message(err, where=cfg.get("run_dir")):  # a library's words for ENOSPC
            sys.exit(error_line(full_disk))
        # unexpected: where it happened matters, but not forty frames of torch and MLflow
        traceback.print_exception(err, limit=-TRACEBACK_FRAMES, file=sys.stderr)
        sys.exit(error_line(f"unexpected {type(err).__name__}: {err}"))


def os_error_message(err: OSError) -> str:
    """`<path>: <reason>` for an OSError that names its path, else its own message."""
    return f"{err.filename}: {err.strerror}" if err.filename else str(err)


def error_line(message: str) -> str:
    """`error: message` on one line (a library's multi-line message joined), so a log ends in one
    greppable line."""
    return "error: " + " ".join(line.strip() for line in message.splitlines() if line.strip())


def cli_main(*, conf_dir: Path, validate: Callable[[DictConfig], Any], search: Callable[[Any], Any]) -> None:
    """`python -m <search> [+experiment=NAME] [key=value ...]` on `conf_dir/config.yaml`."""
    import hydra
    import optuna
    from transformers.utils import logging as hf_logging

    try:  # before Hydra, whose own message for a key the group lacks says nothing of where it went
        check_overrides(sys.argv[1:])
    except ValueError as err:
        sys.exit(error_line(str(err)))
    register_resolvers()  # Hydra resolves run_dir (hence ${project:...}) before it calls us
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial replaces Optuna's
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model would bury the study's output
    quiet_full_disk_in_threads()  # a full disk is the main thread's one line, not a thread's traceback

    @hydra.main(config_path=str(conf_dir), config_name="config", version_base="1.3")
    def main(cfg: DictConfig) -> None:
        run_cli(cfg, validate=validate, search=search)

    main()
