"""Packages a module needs for some of its functions only, imported so that their absence is named.

SimpleITK is a dependency of every install; a GPU training machine that reads packed arrays
(``training/pack.py``) may lack it. There the modules that use it still import, and the first use
says what is missing instead of failing the whole import chain.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import InputError


class MissingPackage:
    """Stands where a package is not installed; any use raises an ``InputError`` naming it."""

    def __init__(self, name: str, pip_name: str) -> None:
        self._name, self._pip_name = name, pip_name

    def __getattr__(self, attribute: str):
        if attribute.startswith("__"):  # introspection (copy, pickle, hasattr of protocols) sees no module
            raise AttributeError(attribute)
        raise InputError(f"{self._name} is not installed, and reading or resampling images needs it: "
                         f"pip install {self._pip_name}")


def optional_import(name: str, pip_name: str | None = None) -> ModuleType | MissingPackage:
    """The module ``name``, or a stand-in that names the missing package at its first use."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return MissingPackage(name, pip_name or name)
