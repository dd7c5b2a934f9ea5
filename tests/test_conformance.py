"""Every built-in component passes the conformance kit (the same kit third-party plugins use)."""

from icezoo.testing import ConformanceSuite


class TestBuiltinConformance(ConformanceSuite):
    package = "icezoo"
