"""Name -> constructor registries. Configs name things; code never grows an `if name == ...` chain."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(self.unknown(name)) from None

    def check(self, name: str) -> str:
        """NAME when registered; else ValueError with the known names (what a spec validator raises)."""
        if name not in self._items:
            raise ValueError(self.unknown(name))
        return name

    def unknown(self, name: object) -> str:
        return f"unknown {self.kind} {name!r} (known: {', '.join(sorted(self._items))})"

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)


MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
METHODS: Registry = Registry("method")
