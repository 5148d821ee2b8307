"""The package version, kept apart so any layer may read it without importing the package."""

__version__ = "0.1.0"
