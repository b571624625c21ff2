"""`python -m evo_core.servers`, the command older runbooks give: forwards to `python -m evo_servers`
(the loopback PostgreSQL + MLflow servers moved out of the core package; docs/scale-out.md)."""
from __future__ import annotations

import runpy

if __name__ == "__main__":
    runpy.run_module("evo_servers", run_name="__main__", alter_sys=True)
