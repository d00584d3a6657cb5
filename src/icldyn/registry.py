"""Name → object registries, so a new task/model/estimator/probe/experiment is one line."""

from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

from icldyn.errors import UsageError

T = TypeVar("T")


def closest(name: str, options) -> str:
    """' (did you mean X?)' for the closest option, or ''."""
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


class Registry(Generic[T]):
    """A named mapping whose unknown-key error lists the known names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None):
        """Register `item` under `name`; usable as a decorator when `item` is omitted."""
        if item is None:
            def deco(obj: T) -> T:
                self.register(name, obj)
                return obj
            return deco
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def __getitem__(self, name: str) -> T:
        if name not in self._items:
            raise UsageError(
                f"unknown {self.kind} {name!r}{closest(name, self._items)}; "
                f"known: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self):
        return sorted(self._items.items())
