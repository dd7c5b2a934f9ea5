"""icezoo: a plugin model zoo for IceCube neutrino direction reconstruction."""

from icezoo.core.version import __version__

__all__ = ["__version__"]
