"""DDP under torchrun on CPU (gloo): two ranks train a tiny pipeline; rank 0 writes one run."""

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


def test_torchrun_two_cpu_ranks(tmp_path):
    from icezoo.data.simulator import simulate

    data = simulate(tmp_path / "data", 300, events_per_batch=100, seed=5)
    (tmp_path / "tiny.toml").write_text(TINY)
    env = {**os.environ, "ICEZOO_NO_AUTOLOAD": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "icezoo.cli.main", "train", "--pipeline-file",
           str(tmp_path / "tiny.toml"), "--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--name", "DDP",
           "--no-progress", "--save-every-steps", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["DDP"], runs  # rank 0 alone made the run directory
    info = json.loads((tmp_path / "runs" / "DDP" / "run.json").read_text())
    assert info["status"] == "done" and info["world_size"] == 2
    assert info["command"].startswith("torchrun --nproc_per_node 2 -m icezoo.cli.main train")
    assert (tmp_path / "runs" / "DDP" / "checkpoints" / "best.pt").is_file()
