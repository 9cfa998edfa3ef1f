"""The one way registries are filled here (layer builders, job runners, spec upgrades):
a decorator that puts the function under its key, as Keras's registries do."""

from collections.abc import Callable
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def register_in(table: dict[K, V], key: K) -> Callable[[V], V]:
    """A decorator that records what it decorates as `table[key]` and returns it unchanged."""

    def add(item: V) -> V:
        table[key] = item
        return item

    return add
