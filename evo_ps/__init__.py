"""Parameter-space (PS) evolutionary merging: `python -m evo_ps`."""
