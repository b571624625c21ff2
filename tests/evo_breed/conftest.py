"""The evo_breed tests see the "multi_task" objective (its configs import evo_breed.multitask);
the registry is put back after each, so that the other tests see the built-in names only."""
from __future__ import annotations

import pytest

from evo_core import OBJECTIVES


@pytest.fixture(autouse=True)
def multi_task_objective():
    before = dict(OBJECTIVES._items)
    from evo_breed import multitask

    multitask.register()
    yield
    OBJECTIVES._items = before
