"""The package version, defined once (the built-in components' provider version)."""

__version__ = "0.1.0"
