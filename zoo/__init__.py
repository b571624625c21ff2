"""The embedded model zoo: a tiny world, its tokenizer, the builder and the committed models.

Importing it registers the data source "zoo" (the world's tasks), which the zoo configs name
(`imports: [objectives, zoo]` in conf/config.yaml).
"""
from __future__ import annotations

from objectives import SOURCES, Item


@SOURCES.register("zoo")
def load_zoo(*, task: str, split: str) -> list[Item]:
    """The embedded zoo's tasks ("ja_math", "en_math", "ja_qa"), via `zoo.world.task_items`."""
    from zoo import world  # looked up at call time so tests can monkeypatch world.task_items

    return [(str(q), str(a)) for q, a in world.task_items(task, split)]
