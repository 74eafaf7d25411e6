"""Name -> builder registries (timm style: `create`, `names`), one per kind of pluggable part."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cimnas.errors import CimnasError


class Registry:
    """A named table of builders. `@REG.register("name")` adds one; `REG.create("name", ...)` builds one."""

    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, doc: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self._builders[name] = fn
            self._docs[name] = doc or (fn.__doc__ or "").strip().split("\n")[0]
            return fn

        return wrap

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise CimnasError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return self._builders[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def describe(self) -> dict[str, str]:
        return {n: self._docs[n] for n in self.names()}

    def __contains__(self, name: str) -> bool:
        return name in self._builders
