"""The package's version: what `mhyolo --version`, exported files and reports record."""

__version__ = "0.1.0"
