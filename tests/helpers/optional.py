"""Skipping tests whose optional packages (the deploy extra) cannot be imported, saying why."""

from __future__ import annotations

import importlib

import pytest


def import_error(*modules: str) -> str | None:
    """The first ImportError of `modules` as text, or None when they all import."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return str(exc)
    return None


def needs(*modules: str) -> pytest.MarkDecorator:
    """Skip the test unless every one of `modules` imports; the reason names the failing import."""
    error = import_error(*modules)
    return pytest.mark.skipif(error is not None, reason=f"{'/'.join(modules)} cannot be imported: {error}")
