"""The example plugin checks itself with icezoo's conformance kit, as any third party would."""

from icezoo.testing import ConformanceSuite


class TestGRUConformance(ConformanceSuite):
    package = "icezoo-gru"
