"""Named registries of plug-ins (task families, datasets, evaluators, architectures, schedules,
probes, recipes).

Every family of plug-ins has one `Registry`: built-ins register themselves with a decorator at
import time, and a user entry is named by import path (`mypkg.module:Thing`) in a config, so a
new plug-in is new files plus one registration, never an edit of jaxcult. One entry of a family
may be its default: the plug-in a config that names none gets (`name` left out).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from jaxcult.errors import UserError

T = TypeVar("T")


def import_path(path: str, key: str) -> object:
    """The object named `package.module:attribute` (attribute may be dotted)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise UserError(f"{key}: {path!r} is not an import path (expected package.module:Name)")
    try:
        found: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except ImportError as err:
        raise UserError(f"{key}: cannot import module {module_name!r} ({err})") from None
    except AttributeError:
        raise UserError(f"{key}: module {module_name!r} has no attribute {attribute!r}") from None
    return found


def subclasses_of(base: type) -> Callable[[object], bool]:
    """A registry check: the entry is a subclass of `base`."""
    return lambda entry: isinstance(entry, type) and issubclass(entry, base)


class Registry(Generic[T]):
    """Name -> plug-in, with import-path entries and errors that list what exists."""

    def __init__(self, kind: str, check: Callable[[object], bool] | None = None) -> None:
        self.kind = kind
        self._check = check
        self._entries: dict[str, T] = {}
        self.default: str | None = None

    def register(self, name: str, *, default: bool = False) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` on a class or factory."""
        def add(entry: T) -> T:
            self.add(name, entry, default=default)
            return entry
        return add

    def named_class(self, name: str, *, default: bool = False) -> Callable[[T], T]:
        """Class decorator: register the class under `name` and set its `name` attribute."""
        def add(cls: T) -> T:
            cls.name = name  # type: ignore[attr-defined]
            self.add(name, cls, default=default)
            return cls
        return add

    def add(self, name: str, entry: T, *, default: bool = False) -> None:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if default and self.default not in (None, name):
            raise ValueError(f"{self.kind}: {name!r} and {self.default!r} are both the default")
        self._entries[name] = entry
        if default:
            self.default = name

    def name_or_default(self, name: str | None, key: str) -> str:
        """`name`, or the family's default when a config names none."""
        if name is not None:
            return name
        if self.default is None:
            raise UserError(f"{key}: no {self.kind} named (this family has no default)")
        return self.default

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))

    def get(self, name: str | None, key: str) -> T:
        """The entry called `name` (or imported from `pkg.mod:Name`; None: the default); `key`
        is the config key that named it, for the error message."""
        name = self.name_or_default(name, key)
        if ":" in name:
            entry = import_path(name, key)
            if self._check is not None and not self._check(entry):
                raise UserError(f"{key}: {name!r} is not a jaxcult {self.kind}")
            return entry  # type: ignore[return-value]
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=2, cutoff=0.6)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            raise UserError(f"{key}: unknown {self.kind} {name!r} ({hint}built-in: "
                            f"{', '.join(self.names())}; or package.module:Name)")
        return self._entries[name]
