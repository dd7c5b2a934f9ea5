"""DDP under torchrun on CPU (gloo): two ranks train a tiny pipeline (``torchrun -m icezoo train``, issue 13
item 17); rank 0 writes one run. An input error that only rank 0 meets stops both ranks with the same
one line (item 16)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

pytest.importorskip("torch")

TINY = """
[pipelines.tiny]
features = [{ name = "kaggle_norm" }]
selection = { name = "time_order", max_pulses = 32 }
embedder = { name = "linear", dim = 16 }
backbone = { name = "transformer", depth = 1, heads = 2 }
pooler = ["mean"]
head = { name = "direction_kappa" }
loss = [{ name = "vmf3d" }]
train = { batch_size = 16, epochs = 1 }
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path, *args, log_dir=None, timeout=240):
    env = {**os.environ, "ICEZOO_NO_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"}
    logs = ["--redirects", "3", "--log-dir", str(log_dir)] if log_dir else []
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), *logs, "-m", "icezoo", "train", "--pipeline-file",
           str(tmp_path / "tiny.toml"), *map(str, args), "--no-progress"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


@pytest.fixture
def data(tmp_path):
    from icezoo.data.simulator import simulate

    (tmp_path / "tiny.toml").write_text(TINY)
    return simulate(tmp_path / "data", 300, events_per_batch=100, seed=5)


def test_item_17_torchrun_m_icezoo_trains_on_two_cpu_ranks(tmp_path, data):
    proc = _torchrun(tmp_path, "--data", data, "--runs-dir", tmp_path / "runs", "--name", "DDP",
                     "--save-every-steps", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["DDP"], runs  # rank 0 alone made the run directory
    info = json.loads((tmp_path / "runs" / "DDP" / "run.json").read_text())
    assert info["status"] == "done" and info["world_size"] == 2
    assert info["command"].startswith("torchrun --nproc_per_node 2 -m icezoo train")
    assert (tmp_path / "runs" / "DDP" / "checkpoints" / "best.pt").is_file()


def test_item_16_an_input_error_stops_every_rank_with_the_same_line(tmp_path, data):
    not_a_dir = tmp_path / "runs"
    not_a_dir.write_text("a file where the runs directory should be")  # only rank 0 makes run directories
    proc = _torchrun(tmp_path, "--data", data, "--runs-dir", not_a_dir, log_dir=tmp_path / "logs", timeout=180)
    assert proc.returncode != 0
    errs = sorted((tmp_path / "logs").rglob("stderr.log"))
    assert len(errs) == 2, errs
    lines = [[ln for ln in e.read_text().splitlines() if ln.strip()] for e in errs]
    for rank_lines in lines:
        assert len(rank_lines) == 1 and rank_lines[0].startswith("error: --runs-dir"), rank_lines
    assert lines[0] == lines[1]
    assert "Traceback" not in "".join(e.read_text() for e in errs)
