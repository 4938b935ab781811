"""What a reconcile pass remembers of an object for the next one (a retry schedule, the Event already posted,
the children last applied), held per object uid and dropped when the object is deleted: the per-object
`memo` kopf gives its handlers, here one registry for the whole operator.

Each memo is declared with the kind whose objects key it; the controller of that kind calls
`forget_object` when it sees a deletion, so no module keeps state of objects that are gone.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

V = TypeVar("V")


class Forgettable(Protocol):
    def forget(self, uid: str) -> None: ...


_BY_KIND: dict[str, list[Forgettable]] = {}


def register(kind: str, memo: Forgettable) -> None:
    _BY_KIND.setdefault(kind, []).append(memo)


def forget_object(kind: str, uid: str) -> None:
    """Drop everything remembered of a deleted object of `kind`."""
    for memo in _BY_KIND.get(kind, ()):
        memo.forget(uid)


class Memo(Generic[V]):
    """Values per object uid, optionally under a sub-key (one retry schedule per kind of failure)."""

    def __init__(self, kind: str) -> None:
        self._values: dict[tuple[str, str], V] = {}
        register(kind, self)

    def get(self, uid: str, key: str = "") -> V | None:
        return self._values.get((uid, key))

    def set(self, uid: str, value: V, key: str = "") -> V:
        self._values[(uid, key)] = value
        return value

    def pop(self, uid: str, key: str = "") -> V | None:
        return self._values.pop((uid, key), None)

    def __contains__(self, uid_key: tuple[str, str]) -> bool:
        return uid_key in self._values

    def forget(self, uid: str) -> None:
        for found in [k for k in self._values if k[0] == uid]:
            del self._values[found]

    def __len__(self) -> int:
        return len(self._values)
