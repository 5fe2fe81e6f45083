"""Python callables as C functions, with exceptions that do not vanish.

Linker layer, used by interposition (``load(interpose={...})``) and synthetic modules.
ctypes swallows an exception raised inside a ``CFUNCTYPE`` callback: it prints
"Exception ignored" and returns 0 to the C caller. relink wraps every Python callable it
turns into a C function so that the exception is *recorded* (per thread) and the C caller
gets a zero of the return type; when control comes back to Python through a function
obtained from `Module.function` (its ``errcheck`` hook), through an initializer run by
the linker, or through an explicit `raise_pending()`, the recorded exception is raised
there, with its original traceback. Later exceptions raised before the first is
delivered are attached to it as notes.

A bare Python callable (no ctypes signature given) is called with integer-register
arguments: every parameter is a ``c_ssize_t`` (pointers arrive as ints) and the result
is a ``c_ssize_t`` (None means 0). Give ``(callable, restype, *argtypes)`` for anything
else (floating point, ``c_char_p``...).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["active", "errcheck", "pending", "raise_pending", "wrap_callable"]

_state = threading.local()
_active = [False]  # becomes True once relink wrapped a Python callable


def active() -> bool:
    """True once any Python callable was wrapped (functions then check for exceptions)."""
    return _active[0]


def _record(exc: BaseException) -> None:
    first = getattr(_state, "exc", None)
    if first is None:
        _state.exc = exc
    else:
        first.add_note(f"relink: a later Python callback also raised {exc!r}")


def pending() -> BaseException | None:
    """The exception recorded in this thread and not yet raised, if any."""
    return getattr(_state, "exc", None)


def raise_pending() -> None:
    """Raise (and clear) the exception a Python callback recorded in this thread."""
    exc = getattr(_state, "exc", None)
    if exc is not None:
        _state.exc = None
        raise exc


def errcheck(result: Any, func: Any, args: Any) -> Any:
    """ctypes ``errcheck`` hook: re-raise a recorded callback exception after a call."""
    if getattr(_state, "exc", None) is not None:
        raise_pending()
    return result


def _zero(restype: Any) -> Any:
    if restype is None:
        return None
    if restype in (ctypes.c_float, ctypes.c_double, ctypes.c_longdouble):
        return 0.0
    if restype in (ctypes.c_char_p, ctypes.c_wchar_p, ctypes.c_void_p):
        return None
    if restype is ctypes.c_bool:
        return False
    return 0


def _arity(func: Callable[..., Any], what: str) -> int:
    import inspect  # lazily: inspect costs ~6 ms at start-up, and only interpose= needs it

    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what}: cannot read the signature of {func!r}; give "
                        "(callable, restype, *argtypes)") from exc
    n = 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if p.default is not p.empty:
                break
            n += 1
        elif p.kind is p.VAR_POSITIONAL:
            raise TypeError(f"{what}: a *args callable has no fixed C signature; give "
                            "(callable, restype, *argtypes)")
    return n


def wrap_callable(func: Callable[..., Any], restype: Any = None,
                  argtypes: tuple[Any, ...] | None = None, *, name: str = "callback") -> Any:
    """A ``CFUNCTYPE`` object calling `func`, recording instead of losing its exceptions.

    With ``argtypes=None`` the signature is inferred: one ``c_ssize_t`` per positional
    parameter, ``c_ssize_t`` result. The caller must keep the returned object alive as
    long as native code may call it (`SyntheticModule` does).
    """
    if argtypes is None:
        argtypes = (ctypes.c_ssize_t,) * _arity(func, name)
        restype = ctypes.c_ssize_t
    zero = _zero(restype)
    void = restype is None

    def trampoline(*args: Any) -> Any:
        try:
            result = func(*args)
        except BaseException as exc:  # must not unwind through C frames
            _record(exc)
            return zero
        if result is None and not void:
            return zero
        return result

    trampoline.__name__ = getattr(func, "__name__", name)
    _active[0] = True
    return ctypes.CFUNCTYPE(restype, *argtypes)(trampoline)
