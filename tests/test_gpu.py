"""The GPU path (marked ``gpu``; skipped without CUDA): bf16 autocast, fused attention kernels,
single-rank training with an interrupt and an exact resume, pinned-memory loading with workers.

Run on a CUDA machine with ``python -m pytest -m gpu -q`` (benchmarks/gpu_check.sh does, then times
the models). Tiny models and data, like every test; no timing here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tinyzoo import tiny_pipeline

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TINY = tiny_pipeline("tiny_gpu", dim=32, depth=2, description="tiny GPU test pipeline")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from icezoo.data.simulator import simulate

    root = tmp_path_factory.mktemp("gpu")
    data = simulate(root / "data", 400, events_per_batch=100, seed=2)
    pf = root / "tiny.toml"
    pf.write_text(TINY)
    return {"root": root, "data": data, "pf": pf, "runs": root / "runs"}


@pytest.mark.parametrize("backbone", [{"name": "transformer", "depth": 1, "heads": 2},
                                      {"name": "relbias_transformer", "heads": 2, "biased_depth": 1, "depth": 1,
                                       "bias_dim": 8}])
def test_bf16_autocast_training_step(backbone):
    from icezoo.core.synthetic import synthetic_batch
    from icezoo.core.pipelines import pipeline_config
    from icezoo.zoo import build, registry

    config = pipeline_config("default", reg=registry()).with_overrides({"backbone": backbone, "embedder.dim": 32})
    model = build(config).cuda()
    batch = synthetic_batch(model.feature_dim, [32, 20, 7, 2], event_dim=model.event_dim, seed=0).to("cuda")
    seen = []
    linears = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Linear)]
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(o.dtype)) for m in linears]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        pred = model(batch)
    for h in handles:
        h.remove()
    loss = model.loss(pred.float(), batch)
    loss.backward()
    assert linears and set(seen) == {torch.bfloat16}, "the backbone's matmuls did not run in bf16 under autocast"
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():  # bf16 is an approximation of the fp32 model, not another model
        ref = model(batch).float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(batch).float()
    assert torch.allclose(half, ref, atol=0.1, rtol=0.1)


def test_zoo_attention_runs_on_fused_sdpa_kernels():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from icezoo.nn import BiasedAttention

    attn = BiasedAttention(64, 4).cuda().to(torch.bfloat16)
    x = torch.randn(3, 48, 64, device="cuda", dtype=torch.bfloat16)
    full = torch.ones(3, 48, dtype=torch.bool, device="cuda")
    padded = full.clone()
    padded[1, 30:] = False
    with torch.no_grad():
        for mask in (full, padded):
            with sdpa_kernel([SDPBackend.MATH]):
                ref = attn(x, mask)
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):  # no math fallback
                fused = attn(x, mask)
            torch.testing.assert_close(fused.float(), ref.float(), atol=2e-2, rtol=2e-2)
    q = torch.randn(2, 4, 64, 16, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # the zoo's head width (16) on the flash kernel
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert torch.isfinite(out).all()


def _train(world, name, *extra, env=None):
    args = [sys.executable, "-m", "icezoo.cli.main", "train", "--pipeline-file", str(world["pf"]),
            "--pipeline", "tiny_gpu", "--data", str(world["data"]), "--runs-dir", str(world["runs"]),
            "--name", name, "--no-progress", "--device", "cuda", "--save-every-steps", "3", *extra]
    return subprocess.Popen(args, env={**os.environ, "ICEZOO_NO_AUTOLOAD": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _state(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")


def test_single_rank_cuda_training_interrupted_and_resumed(world):
    full = _train(world, "FULL")
    assert full.wait(timeout=300) == 0, full.communicate()
    part = _train(world, "PART", env={"ICEZOO_DEBUG_STEP_SLEEP": "0.2"})
    last = world["runs"] / "PART" / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not (last.is_file() and _state(world["runs"] / "PART")["step"] >= 3):
        assert part.poll() is None and time.time() < deadline, part.communicate()
        time.sleep(0.1)
    part.send_signal(signal.SIGINT)
    assert part.wait(timeout=60) == 130, part.communicate()
    resumed = subprocess.run([sys.executable, "-m", "icezoo.cli.main", "train", "--resume", "PART", "--runs-dir",
                              str(world["runs"]), "--no-progress"], capture_output=True, text=True,
                             env={**os.environ, "ICEZOO_NO_AUTOLOAD": "1"}, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    info = json.loads((world["runs"] / "PART" / "run.json").read_text())
    assert info["status"] == "done" and info["resumed"] == 1
    a, b = _state(world["runs"] / "FULL")["state_dict"], _state(world["runs"] / "PART")["state_dict"]
    assert a.keys() == b.keys()
    for k in a:  # GPU kernels are not bitwise deterministic: equal up to float noise
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3, msg=k)


def test_pinned_memory_loading_with_workers(world):
    from icezoo.data.io import list_batches
    from icezoo.data.loader import make_loader
    from icezoo.core.pipelines import pipeline_config
    from icezoo.zoo import build, registry

    model = build(pipeline_config("tiny_gpu", world["pf"], reg=registry()))
    ids = list_batches(world["data"], "train")
    plain = list(make_loader(world["data"], "train", ids, model.selection, model.features, 32, num_workers=0))
    pinned = list(make_loader(world["data"], "train", ids, model.selection, model.features, 32, num_workers=2,
                              pin_memory=True))
    assert len(plain) == len(pinned) > 0
    assert sorted(int(b.event_id.sum()) for b in plain) == sorted(int(b.event_id.sum()) for b in pinned)
    for batch in pinned:
        assert batch.features.is_pinned() and batch.mask.is_pinned()
        on_gpu = batch.to("cuda")
        torch.cuda.synchronize()
        assert torch.equal(on_gpu.features.cpu(), batch.features)
