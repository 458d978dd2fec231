"""Errors that carry a message meant for the user (file, line, what to do)."""

from __future__ import annotations


class MhyoloError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class WeightsError(MhyoloError):
    """A checkpoint that cannot be found, read or trusted."""


class UnsafePickleError(WeightsError):
    """A pickle that references something outside the allow-list."""


class DataError(MhyoloError):
    """A dataset, image or label that cannot be used; names the file and line."""


class ConfigError(MhyoloError):
    """A YAML configuration that does not fit its dataclass."""
