"""Files shipped inside the package: detector geometry, ice table, and the pipeline registry."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def resource_path(name: str) -> Path:
    return Path(str(resources.files("icezoo.resources").joinpath(name)))


def geometry_csv() -> Path:
    """IceCube-86 DOM positions, Kaggle layout (sensor_id,x,y,z in metres)."""
    return resource_path("sensor_geometry.csv")


def ice_table_csv() -> Path:
    """SPICE Mie scattering/absorption lengths vs depth (metres)."""
    return resource_path("ice_transparency.csv")


def registry_toml() -> Path:
    """registry.toml: at the repository root in a checkout (editable install), inside the package
    in a wheel (the build copies it there); the root copy wins so edits take effect at once."""
    root = Path(__file__).resolve().parents[2] / "registry.toml"
    if root.is_file() and (root.parent / "pyproject.toml").is_file():
        return root
    return resource_path("registry.toml")
