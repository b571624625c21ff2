"""The one command-line shape of every search: Hydra composes the config, the lifecycle runs it.

    # evo_ps/__main__.py
    cli_main(conf_dir=CONF_DIR, validate=validate, search=PSSearch)

Process-wide settings (Optuna's verbosity, the `${project:...}` config resolver, no progress bars)
are made here, when a command starts, not on import. Bad input exits non-zero with one `error:` line.

The error boundary: an expected failure (ValueError, FileNotFoundError, KeyError: bad config or
data, missing models, a server down at start) is that one line; any other OSError (an unwritable
or read-only path) is one line naming the path; a full disk (ENOSPC, or a library's words for it,
anywhere in the chain of causes) is `error: no space left on <run_dir> (...)`; the storage server
gone mid-run is one line naming it (evo_core/_probes.py server_gone); anything else is a bug or an environment fault: its last few
frames, then the same kind of line, so a log still ends in one greppable `error:`.

Credentials (a password in tracking.storage or tracking.uri) are masked in all a command writes:
its output and Hydra's job log, while it runs, and the configs Hydra saved before it (_secrets.py).
"""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ._config import check_overrides
from ._files import NoSpaceLeft, no_space_message, quiet_full_disk_in_threads
from ._paths import register_resolvers
from ._secrets import HYDRA_FILES, mask_files, mask_secrets, masked_output

TRACEBACK_FRAMES = 4  # the innermost frames of an unexpected error's traceback


def run_cli(cfg: DictConfig, *, validate: Callable[[DictConfig], Any], search: Callable[[Any], Any]) -> None:
    """`run_study(validate(cfg), search(typed))`; bad input exits non-zero with one `error: ...` line."""
    with masked_output():
        _mask_hydra_files()
        _run_guarded(cfg, validate=validate, search=search)


def _run_guarded(cfg: DictConfig, *, validate: Callable[[DictConfig], Any], search: Callable[[Any], Any]) -> None:
    """The error boundary (module docstring)."""
    from ._lifecycle import run_study
    from ._probes import server_gone

    typed = None
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
        # the storage server gone mid-run (PostgreSQL down): one line naming it, as at start
        if typed is not None and (gone := server_gone(err, typed.tracking)):
            sys.exit(error_line(gone))
        # unexpected: where it happened matters, but not forty frames of torch and MLflow
        traceback.print_exception(err, limit=-TRACEBACK_FRAMES, file=sys.stderr)
        sys.exit(error_line(f"unexpected {type(err).__name__}: {err}"))


def os_error_message(err: OSError) -> str:
    """`<path>: <reason>` for an OSError that names its path, else its own message."""
    return f"{err.filename}: {err.strerror}" if err.filename else str(err)


def error_line(message: str) -> str:
    """`error: message` on one line (a library's multi-line message joined), so a log ends in one
    greppable line."""
    # masked here too: sys.exit prints it after masked_output has ended
    return "error: " + mask_secrets(" ".join(line.strip() for line in message.splitlines() if line.strip()))


def _mask_hydra_files() -> None:
    """Hydra saved the composed config and the overrides (run_dir/.hydra/) before calling us:
    rewritten with their credentials masked (no-op outside a Hydra run, or with output_subdir null)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and (subdir := HydraConfig.get().output_subdir) is not None:
        saved = Path(HydraConfig.get().runtime.output_dir) / subdir
        mask_files(saved / name for name in HYDRA_FILES)


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
    # likewise tqdm's bars elsewhere (lm-eval draws one per trial while it builds its requests)
    os.environ.setdefault("TQDM_DISABLE", "1")
    quiet_full_disk_in_threads()  # a full disk is the main thread's one line, not a thread's traceback

    @hydra.main(config_path=str(conf_dir), config_name="config", version_base="1.3")
    def main(cfg: DictConfig) -> None:
        run_cli(cfg, validate=validate, search=search)

    main()
