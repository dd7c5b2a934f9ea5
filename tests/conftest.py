"""Test-wide settings: no third-party autoload surprises, hypothesis profile from icezoo.testing."""

import os

# entry points are loaded on purpose by the tests that want them (tests/test_plugins.py)
os.environ.setdefault("ICEZOO_NO_AUTOLOAD", "1")

import icezoo.testing  # noqa: E402,F401  (registers and loads the hypothesis profile)
