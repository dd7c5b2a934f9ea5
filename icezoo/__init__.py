"""icezoo: a plugin model zoo for IceCube neutrino direction reconstruction."""

__version__ = "0.1.0"
