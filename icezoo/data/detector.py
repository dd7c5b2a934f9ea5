"""The detector a dataset was taken with, as read from the data (not from constants).

IceCube-86 is 5,160 in-ice DOMs with Kaggle ``sensor_id`` 0..5159 (``(string - 1) * 60 +
(dom_number - 1)``), padded slots get ``PAD_SENSOR`` = 5160. Other detectors (the IceCube Upgrade's
mDOMs and D-Eggs, PDOMs) come as GraphNeT pulse rows with ``string, dom_number, pmt_number,
dom_type`` and often ``pmt_dir_x/y/z``; their sensors get ids past IceCube-86's (see
:func:`upgrade_sensor_id`), so ``n_sensors`` and ``pad_sensor`` are properties of the detector.

Components declare what they need (``Component.needs``, e.g. ``icecube86_sensor_id`` for a
per-DOM embedding or the per-DOM quantum efficiency table); :func:`check_needs` refuses a pipeline
whose needs the detector does not provide, before training, in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from icezoo.core.detector import N_SENSORS, PAD_SENSOR
from icezoo.core.errors import IcezooError

#: GraphNeT's dom_type codes
DOM_TYPES = {20: "IceCube DOM", 110: "PDOM", 120: "D-Egg", 130: "mDOM"}
ICECUBE_DOM = 20
#: what a detector can provide (a component's ``needs`` names these)
NEED_TEXT = {
    "icecube86_sensor_id": "IceCube-86 sensor ids (a row per DOM of the 5,160)",
    "pmt_direction": "PMT directions (pmt_dir_x/y/z)",
    "sensor_type": "sensor types (dom_type)",
}
#: id space of non-IceCube-86 sensors: strings 1..MAX_STRING, modules 1..MAX_MODULE, PMTs 0..MAX_PMT-1
MAX_STRING, MAX_MODULE, MAX_PMT = 100, 200, 32
N_UPGRADE_IDS = MAX_STRING * MAX_MODULE * MAX_PMT


def upgrade_sensor_id(string, dom_number, pmt_number):
    """The id of a sensor (one PMT) that is not an IceCube-86 DOM: past IceCube-86's ids, the same in
    every chunk of a file (numpy arrays in, int64 out)."""
    return N_SENSORS + ((string - 1) * MAX_MODULE + (dom_number - 1)) * MAX_PMT + pmt_number


@dataclass(frozen=True)
class Detector:
    """The sensors of a dataset: ``types`` counts sensors per type name; ``icecube86`` is True when
    every sensor is an IceCube-86 DOM under its Kaggle sensor_id."""

    name: str
    types: dict[str, int] = field(default_factory=dict)
    icecube86: bool = True
    pmt_direction: bool = False
    sensor_type: bool = False

    @property
    def n_sensors(self) -> int:
        """Size of the sensor-id space (ids 0..n_sensors-1; sparse past IceCube-86's)."""
        return N_SENSORS if self.icecube86 else N_SENSORS + N_UPGRADE_IDS

    @property
    def pad_sensor(self) -> int:
        """The id of padded slots: never a real sensor."""
        return PAD_SENSOR if self.icecube86 else self.n_sensors

    @property
    def provides(self) -> set[str]:
        """What components may need of it; IceCube-86 alone also provides sensor types and PMT
        directions without the columns: every sensor is an IceCube DOM whose PMT faces down (-z)."""
        out = set()
        if self.icecube86:
            out.update({"icecube86_sensor_id", "sensor_type", "pmt_direction"})
        if self.pmt_direction:
            out.add("pmt_direction")
        if self.sensor_type:
            out.add("sensor_type")
        return out

    def text(self) -> str:
        kinds = ", ".join(f"{n:,} {t}" for t, n in sorted(self.types.items())) or "sensors not counted"
        return f"{self.name} ({kinds})"


def icecube86() -> Detector:
    """IceCube-86 as the Kaggle layout knows it (no types or PMT directions in the files)."""
    return Detector("IceCube-86", {"IceCube DOM": N_SENSORS}, icecube86=True)


def check_needs(components, detector: Detector, data) -> None:
    """One line naming the first component whose ``needs`` the detector does not provide."""
    for comp in components:
        for need in getattr(comp, "needs", ()) or ():
            if need not in detector.provides:
                kind, name = getattr(comp, "kind", "component"), getattr(comp, "name", type(comp).__name__)
                raise IcezooError(f"{data}: {kind} '{name}' needs {NEED_TEXT.get(need, need)}, which this data "
                                  f"does not have (detector: {detector.text()}); use a position-based pipeline")
