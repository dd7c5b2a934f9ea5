"""Files shipped inside the package: detector geometry, ice table, the pipeline registry, the shipped
studies and the experiment log's rows."""

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


def _root_or_packaged(name: str) -> Path:
    """A TOML file kept at the repository root: the root copy in a checkout (editable install), so
    edits take effect at once; the copy inside the package in a wheel (the build copies it there)."""
    root = Path(__file__).resolve().parents[2] / name
    if root.is_file() and (root.parent / "pyproject.toml").is_file():
        return root
    return resource_path(name)


def registry_toml() -> Path:
    """registry.toml: the named pipelines."""
    return _root_or_packaged("registry.toml")


def studies_toml() -> Path:
    """studies.toml: the shipped studies (``icezoo reproduce``)."""
    return _root_or_packaged("studies.toml")


def experiment_log_toml() -> Path:
    """The experiment log's rows in its order (``icezoo experiments``)."""
    return resource_path("experiment_log.toml")
