"""run_dir checked before Hydra writes into it.

Hydra opens its log file (`run_dir/_cli.log`) before it calls the command: a read-only or
unwritable run_dir failed there, in two tracebacks ending in `Unable to configure handler 'file'`.
Each conf/**/config.yaml names this callback under `hydra.callbacks`, so that Hydra calls it first
(on_run_start: after composing the config, before making the output directory and its logging):

    hydra:
      callbacks:
        run_dir: {_target_: evo_core._run_dir.CheckRunDir}

A module of its own because only Hydra imports it: `import evo_core` does not pay for Hydra's
callback API (0.15 s).
"""
from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ._cli import error_line, os_error_message
from ._files import writable_dir


class CheckRunDir(Callback):
    """`error: <run_dir>: <reason> (run_dir)` and exit, when Hydra's run directory is not writable."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:  # hydra.run.dir is ${run_dir} unless overridden: the directory Hydra is about to write into
            run_dir = config.hydra.run.dir
            writable_dir(run_dir, key="run_dir" if run_dir == OmegaConf.select(config, "run_dir") else "hydra.run.dir")
        except OSError as err:
            sys.exit(error_line(os_error_message(err)))  # SystemExit: Hydra's report of errors lets it through
