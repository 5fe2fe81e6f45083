"""Value semantics for small ``__slots__`` records, without the `dataclasses` module.

Support module, no pipeline stage. The records a load builds (ELF headers, dynamic
info, version tables, search candidates, arch specs ...) were ``@dataclass``es; importing
`dataclasses` (which pulls in inspect, ast, dis, tokenize ...) and generating their
methods cost ~10 ms of a first load in a fresh process, more than the load itself. A
record here declares ``__slots__`` and a plain typed ``__init__``, and inherits from
these bases what ``@dataclass`` generated: a repr, equality and (when frozen) a hash by
its fields, which are the names in its ``__slots__`` in order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Self

__all__ = ["FrozenRecord", "Record"]


class Record:
    """A mutable record: repr and equality by the fields in ``__slots__``; unhashable
    (as a ``@dataclass`` with ``eq=True`` and not frozen: defining ``__eq__`` alone sets
    ``__hash__`` to None)."""

    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple([getattr(self, name) for name in self.__slots__])

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__qualname__}({args})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._fields() == other._fields()


class FrozenRecord(Record):
    """An immutable record (as ``@dataclass(frozen=True)``): assigning a field raises
    AttributeError; hashable by its fields. ``__init__`` sets fields with `_set`."""

    __slots__: tuple[str, ...] = ()

    def _set(self, *values: object) -> None:
        """Set the fields, in ``__slots__`` order (for ``__init__`` only)."""
        setattr_ = object.__setattr__
        for name, value in zip(self.__slots__, values, strict=True):
            setattr_(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen "
                             f"{type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen "
                             f"{type(self).__name__}")

    def __hash__(self) -> int:
        return hash(self._fields())

    def replace(self, **changes: object) -> Self:
        """A copy with some fields changed (``dataclasses.replace`` for records)."""
        new = object.__new__(type(self))
        setattr_ = object.__setattr__
        for name in self.__slots__:
            setattr_(new, name, changes.pop(name) if name in changes else getattr(self, name))
        if changes:
            raise TypeError(f"{type(self).__name__} has no field {next(iter(changes))!r}")
        return new
