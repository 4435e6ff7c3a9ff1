"""Pennant's domain, as packages named for their concept (see core/README.md for the layering).

Each package's `__init__` re-exports its public names lazily (`lazy_exports`): importing one
module of a package runs none of its siblings, so a package can re-export a store (asyncpg) or
a renderer (Jinja2) without pulling them into a workflow module that only wants its models,
and packages that refer to each other's modules never meet a half-initialised `__init__`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for a package that re-exports `name -> module` on first use."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
