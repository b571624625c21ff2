"""Name -> object registries: every extension point (merge methods, objectives, samplers, scale
models, prompt templates, data sources, ...) is one, and unknown names fail listing the known ones.

    SOURCES = Registry("data source")

    @SOURCES.register("tsv")                   # as a decorator
    def load_tsv(*, path): ...

    SOURCES.register("csv", load_csv)          # or directly
    SOURCES.get("tsv")                         # the function
    SOURCES.get("xls")                         # ValueError: unknown data source 'xls'; known: csv, tsv

Registering is how code outside this project extends it: import the registry, register a name,
then use the name in a config.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, item: T) -> T: ...

    def register(self, name, item=None):
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return add if item is None else add(item)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
