"""registry.toml, studies.toml and the experiment log's rows are found from a built wheel, not only from the
editable checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_registry_toml_and_finds_it(tmp_path):
    pytest.importorskip("hatchling", reason="the dev extra installs hatchling for this test")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                          str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("icezoo-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "icezoo/resources/registry.toml" in names
        assert {"icezoo/resources/sensor_geometry.csv", "icezoo/resources/ice_transparency.csv"} <= names
        assert (zf.read("icezoo/resources/registry.toml") == (ROOT / "registry.toml").read_bytes())
        assert (zf.read("icezoo/resources/studies.toml") == (ROOT / "studies.toml").read_bytes())
        assert "icezoo/resources/experiment_log.toml" in names
        zf.extractall(tmp_path / "site")
    probe = ("from icezoo.resources import registry_toml; from icezoo.zoo import registry;"
             "from icezoo.engine.studies import load_studies; from icezoo.engine.experiments import log_rows;"
             "print(registry_toml()); print(len(registry().pipelines)); print(registry().study_files[0]);"
             "print(len(load_studies())); print(len(log_rows()))")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "ICEZOO_NO_AUTOLOAD": "1"}
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    path, count, studies, n_studies, n_rows = res.stdout.split()
    assert Path(path).is_relative_to(tmp_path / "site") and int(count) >= 20
    assert Path(studies).is_relative_to(tmp_path / "site") and int(n_studies) >= 7 and int(n_rows) == 58
