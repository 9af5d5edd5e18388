"""One small registry for every pluggable part (value functions, solvers, estimators, rules, tasks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object. Registering a name twice raises; an unknown name lists the valid ones.

    ``Registry("value", "value function")`` gives errors such as
    ``value='x' is not a registered value function; valid: ['nonzero', 'paper']``.
    """

    def __init__(self, argument: str, kind: str) -> None:
        self.argument = argument
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``."""

        def decorator(item: T) -> T:
            self.add(name, item)
            return item

        return decorator

    def add(self, name: str, item: T) -> None:
        """Register ``item`` under ``name``; a taken name raises ``ValueError``."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item

    def get(self, name: str) -> T:
        """The item registered as ``name``."""
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name (a list from a config file)
            raise ValueError(
                f"{self.argument}={name!r} is not a registered {self.kind}; valid: {self.names()}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
