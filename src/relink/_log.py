"""Module loggers that import `logging` only when something is logged.

Support module, no pipeline stage. ``import logging`` costs ~7 ms at start-up (it pulls
in traceback, string, textwrap, ...), and the load path logs only on rare events (a W+X
segment, a failing finalizer, a malformed ld.so cache), so a first load in a fresh
process should not pay for it. ``log = lazy_logger(__name__)`` behaves as
``logging.getLogger(__name__)`` for every call a module makes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging
    from typing import Any

__all__ = ["LazyLogger", "lazy_logger"]


class LazyLogger:
    """A stand-in for ``logging.getLogger(name)``: attribute access (``log.debug``,
    ``log.warning``, ``log.isEnabledFor`` ...) goes to the real logger, created on first
    use."""

    __slots__ = ("name", "_logger")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def __getattr__(self, attr: str) -> Any:
        logger = self._logger
        if logger is None:
            import logging

            logger = self._logger = logging.getLogger(self.name)
        return getattr(logger, attr)

    def __repr__(self) -> str:
        return f"<LazyLogger {self.name}>"


def lazy_logger(name: str) -> LazyLogger:
    """The lazily created logger called `name` (use ``lazy_logger(__name__)``)."""
    return LazyLogger(name)
