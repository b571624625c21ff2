"""The embedded model zoo: a tiny world, its tokenizer, the builders and the committed models.

Importing it registers the data source "zoo" (the world's tasks), which the zoo configs name
(`imports: [objectives, zoo]` in conf/config.yaml).
"""
from __future__ import annotations

from objectives import SOURCES, Item


@SOURCES.register("zoo")
def load_zoo(*, task: str, split: str) -> list[Item] | list[dict]:
    """The embedded zoo's tasks: text ("ja_math", "en_math", "ja_qa", via `zoo.world.task_items`),
    the LoRA zoo's ("lora_add_and_count", "lora_en_add", ..., via `zoo.lora_world.task_items`) and
    visual QA ("ja_vqa", "en_vqa", ..., via `zoo.vqa.task_items`: dicts with an image)."""
    from zoo import world  # looked up at call time so tests can monkeypatch task_items

    if task in world.EVAL_SIZES:
        return [(str(q), str(a)) for q, a in world.task_items(task, split)]
    from zoo import lora_world

    if task in lora_world.TASKS:
        return lora_world.task_items(task, split)
    from zoo import vqa  # images: only for the VQA tasks

    if task not in vqa.EVAL_SIZES:
        known = [*world.EVAL_SIZES, *lora_world.TASKS, *vqa.EVAL_SIZES]
        raise ValueError(f"unknown zoo task {task!r}; known: {', '.join(dict.fromkeys(known))}")
    return vqa.task_items(task, split)
