"""run_dir checked before Hydra writes into it.

Hydra opens its log file (`run_dir/_cli.log`) and saves the config (`run_dir/.hydra/`) before it
calls the command: a read-only or unwritable run_dir failed there, in two tracebacks ending in
`Unable to configure handler 'file'`, and a full disk in a traceback of Hydra's `_save_config`.
Each conf/**/config.yaml names this callback under `hydra.callbacks`, so that Hydra calls it first
(on_run_start: after composing the config, before making the output directory and its logging):

    hydra:
      callbacks:
        run_dir: {_target_: evo_core._run_dir.CheckRunDir}

A module of its own because only Hydra imports it: `import evo_core` does not pay for Hydra's
callback API (0.15 s). What the check adds to a command's start: 11 to 22 ms (importing this
module, instantiating the callback and running it, hydra and evo_core already imported; 3 runs).
"""
from __future__ import annotations

import errno
import shutil
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ._cli import error_line, os_error_message
from ._files import no_space_message, writable_dir


# Hydra's saved configs (run_dir/.hydra/) take ~20 KiB: with less free, it would fail writing them
MIN_FREE_BYTES = 64 * 1024


class CheckRunDir(Callback):
    """`error: <run_dir>: <reason> (run_dir)` and exit, when Hydra's run directory is not writable;
    `error: no space left on <run_dir> ...` when its disk is (all but) full already."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # hydra.run.dir is ${run_dir} unless overridden: the directory Hydra is about to write into
        run_dir = config.hydra.run.dir
        try:
            writable_dir(run_dir, key="run_dir" if run_dir == OmegaConf.select(config, "run_dir") else "hydra.run.dir")
        except OSError as err:
            sys.exit(error_line(os_error_message(err)))  # SystemExit: Hydra's report of errors lets it through
        free = shutil.disk_usage(run_dir).free
        if free < MIN_FREE_BYTES:
            full = OSError(errno.ENOSPC, f"{free // 1024} KiB free")
            sys.exit(error_line(no_space_message(full, where=run_dir)))
