"""Fast paths that check what they stand on.

A few parts of the service replace a library's own code path with a faster one that reads
or overrides the library's private attributes (realtime.engine with realtime.lean,
realtime.transport, realtime.server's ack frames). Each declares a `FastPath`: the
library release it was written against (major.minor) and the attributes it relies on. When
the server is built, `check()` compares them with what is installed; on a mismatch it logs
one warning and the caller serves that part through the library's stock path instead.
`FAST_PATHS=off` (Settings.fast_paths) asks for the stock paths without any check.
docs/protocol.md, "Fast paths and the stock path", says which parts switch.
"""

from __future__ import annotations

import dis
import functools
import logging
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

log = logging.getLogger(__name__)


def installed_version(distribution: str) -> str:
    """The installed release of `distribution` ("unknown" when not installed as one)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # vendored or renamed: not a release we know
        return "unknown"


def same_release(found: str, written_for: str) -> bool:
    """True when `found` has the major.minor of `written_for` (patch releases may differ)."""
    return found.split(".")[:2] == written_for.split(".")[:2]


@dataclass(frozen=True)
class FastPath:
    """What one fast path needs of one library."""

    #: What the fast path is, for the warning ("the uvicorn websocket protocol").
    name: str
    #: The library's distribution name, as pip knows it ("python-engineio").
    library: str
    #: The release it was written against: "4.15" (any 4.15.x matches).
    written_for: str
    #: (class or module, attribute) pairs: a class or module attribute, or instance state
    #: the class's own code sets (`self.frames = []` in one of its methods).
    relies_on: Sequence[tuple[Any, str]] = ()

    def mismatch(self) -> str | None:
        """Why the installed library is not what this fast path was written for, or None."""
        found = installed_version(self.library)
        if not same_release(found, self.written_for):
            return f"found {self.library} {found}, written for {self.written_for}"
        missing = [
            f"{_name(owner)}.{attr}" for owner, attr in self.relies_on if not _has(owner, attr)
        ]
        if missing:
            return f"{self.library} {found} (written for {self.written_for}) lacks " + ", ".join(
                missing
            )
        return None

    def check(self) -> bool:
        """True when the fast path may be used; otherwise one warning says why not."""
        problem = self.mismatch()
        if problem is not None:
            log.warning("%s: %s; serving it through the stock path instead", self.name, problem)
        return problem is None


def all_match(paths: Sequence[FastPath]) -> bool:
    """True when every one matches; the first that does not logs its warning (the others
    are then not checked: one warning for the fast path)."""
    return all(path.check() for path in paths)


def _name(owner: Any) -> str:
    return str(getattr(owner, "__qualname__", None) or getattr(owner, "__name__", owner))


def _has(owner: Any, attr: str) -> bool:
    if hasattr(owner, attr):
        return True
    # Instance state exists only on instances: the class's own code must still set it.
    return isinstance(owner, type) and attr in _state_set(owner)


@functools.cache
def _state_set(cls: type) -> frozenset[str]:
    """The attributes the code of `cls` and its bases assigns (`something.name = ...`)."""
    names: set[str] = set()
    for klass in cls.__mro__[:-1]:  # not `object`
        for value in vars(klass).values():
            for function in _functions(value):
                names.update(_assigned(function.__code__))
    return frozenset(names)


def _functions(value: Any) -> Iterator[types.FunctionType]:
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    candidates: tuple[Any, ...] = (value,)
    if isinstance(value, property):
        candidates = (value.fget, value.fset, value.fdel)
    yield from (item for item in candidates if isinstance(item, types.FunctionType))


def _assigned(code: types.CodeType) -> Iterator[str]:
    for instruction in dis.get_instructions(code):
        if instruction.opname == "STORE_ATTR":
            yield str(instruction.argval)
    for const in code.co_consts:  # nested functions, comprehensions
        if isinstance(const, types.CodeType):
            yield from _assigned(const)
