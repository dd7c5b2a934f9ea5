"""Side by side in one process: icezoo's relative-bias model against the 2nd-place solution's own code.

The reference is the peer's ``DeepIceModel`` (DrHB/icecube-2nd-place, ``src/models.py``) loaded
from a copy of that repository the user fetched and names with ``--peer`` (nothing of it is in this
repository). Its imports that ``DeepIceModel`` never uses (graphnet, timm, torch_geometric,
torch_scatter) are replaced, while the file loads, by stand-ins; timm's ``trunc_normal_`` and
``drop_path`` by torch's equivalents. Both models at the issue's shape: d192, head width 16 (12
heads), 4 relative-bias blocks + 4 plain blocks, feed-forward 4x, every biased block reading the
interval (the peer's ``n_rel = 4``), on the same batch (default 16 events x 128 pulses, all real).

``--scope pipeline`` (default): icezoo's INIT5_HB pipeline (kaggle_norm features, fourier embedder,
``relbias_transformer``, mean+max pooling, direction+kappa head) with ``bias_dim = 16`` (the peer
encodes the interval with head-width sinusoids) against the whole ``DeepIceModel`` (its Extractor
with ``--peer-dim-base`` sinusoids per scalar, default 32 as icezoo's fourier embedder, its Rel_ds,
blocks, CLS and output layer). ``--scope backbone``: both from the same width-192 pulse states on
(the peer's Extractor replaced by those states; icezoo's ``RelBiasTransformer`` alone).

A training step is forward + backward of the mean square of the output; inference a forward under
``torch.inference_mode`` in eval mode. The two models take turns, round after round (round 0
warms up); reported: the median time per step of each, and the median and range over rounds of the
per-round ratio peer / icezoo (above 1: icezoo is faster). Usage:

    python benchmarks/relbias_side_by_side.py --peer PATH/TO/icecube-2nd-place [--scope pipeline|backbone]
        [--batch 16] [--pulses 128] [--rounds 7] [--steps 2] [--threads N] [--clock wall|cpu] [--onnx]

``--onnx`` adds icezoo's pipeline exported to ONNX (``icezoo.engine.export.export_onnx``, what ``icezoo
export`` writes) run by onnxruntime on the CPU with the same thread count, inference only.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from torch import nn

from icezoo.core.memory import keep_freed_memory
from icezoo.core.pipelines import pipeline_config
from icezoo.core.synthetic import synthetic_batch
from icezoo.plugins.backbones.relbias import RelBiasTransformer
from icezoo.zoo import build, make_registry

# --------------------------------------------------------------------------------------------
# loading the peer's file with its unused imports stood in for

_STUBBED = ("timm", "timm.models", "timm.models.layers", "graphnet", "graphnet.models", "graphnet.models.gnn",
            "graphnet.models.gnn.gnn", "graphnet.models.utils", "graphnet.utilities", "graphnet.utilities.config",
            "torch_geometric", "torch_geometric.utils", "torch_geometric.nn", "torch_geometric.nn.pool",
            "torch_geometric.typing", "torch_scatter")


class _Unused(nn.Module):
    """Stands in for a class the peer's file imports but DeepIceModel never builds (a base class too)."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("a stubbed import of the peer's file was used")


def _drop_path(x, drop_prob=0.0, training=False):
    """timm's stochastic depth (only called with drop_prob > 0, which this benchmark never sets)."""
    if not drop_prob or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - drop_prob)
    return x * keep / (1 - drop_prob)


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "trunc_normal_":
            return nn.init.trunc_normal_
        if name == "drop_path":
            return _drop_path
        return _Unused if name[:1].isupper() else (lambda f=None, *a, **k: f)  # classes; decorators


def load_peer(path: Path) -> types.ModuleType:
    """The peer's ``src/models.py`` as a module (``path``: the repository or the file itself)."""
    file = path / "src" / "models.py" if path.is_dir() else path
    if not file.is_file():
        raise SystemExit(f"--peer {path}: no src/models.py there (fetch DrHB/icecube-2nd-place)")
    saved = {name: sys.modules.get(name) for name in _STUBBED}
    try:
        for name in _STUBBED:
            sys.modules[name] = _StubModule(name)
        spec = importlib.util.spec_from_file_location("peer_models", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    return module


def peer_inputs(batch, states: torch.Tensor | None = None) -> dict:
    """The peer's input dict for an icezoo batch: pos in 500 m, time in 3e4 ns (its Rel_ds units),
    charge and auxiliary from the kaggle_norm columns, qe / ice properties zeros (its Extractor
    does not read them), L0 the pulse count; ``states``: given width-D pulse states (backbone scope)."""
    xyzt, mask = batch.xyzt, batch.mask
    x0 = {"mask": mask, "pos": xyzt[..., :3] / 500.0, "time": xyzt[..., 3] / 3.0e4,
          "charge": batch.features[..., 4], "auxiliary": (batch.features[..., 5] > 0).long(),
          "qe": torch.zeros_like(mask, dtype=torch.float32),
          "ice_properties": torch.zeros(*mask.shape, 2), "L0": mask.sum(-1)}
    if states is not None:
        x0["states"] = states
    return x0


class _GivenStates(nn.Module):
    """Replaces the peer's Extractor in the backbone scope: the given pulse states, cut to Lmax as it cuts."""

    def forward(self, x0, lmax=None):
        return x0["states"] if lmax is None else x0["states"][:, :lmax]


# --------------------------------------------------------------------------------------------


def make_models(args, peer_mod):
    """(icezoo model, its step input call, peer model, its call) for the chosen scope."""
    dim, lengths = 192, [args.pulses] * args.batch
    torch.manual_seed(0)
    peer = peer_mod.DeepIceModel(dim=dim, dim_base=args.peer_dim_base, depth=4, head_size=16, depth_rel=4, n_rel=4)
    if args.scope == "backbone":
        cfg = RelBiasTransformer.Config(dim=dim, heads=12, biased_depth=4, depth=4, bias_dim=16)
        ours = RelBiasTransformer(cfg, dim)
        batch = synthetic_batch(dim, lengths, seed=0)
        peer.extractor = _GivenStates()
        x0 = peer_inputs(batch, batch.features)
        return ours, (lambda: ours(batch.features, batch)), peer, (lambda: peer(x0)), batch
    reg = make_registry(autoload=False)  # built-ins only: the benchmark needs no installed plugin
    config = pipeline_config("INIT5_HB", reg=reg).with_overrides(
        {"backbone.bias_dim": 16, "selection.max_pulses": args.pulses, "train.batch_size": args.batch})
    ours = build(config, reg)
    batch = synthetic_batch(ours.feature_dim, lengths, event_dim=ours.event_dim, seed=0)
    x0 = peer_inputs(batch)
    return ours, (lambda: ours(batch)), peer, (lambda: peer(x0)), batch


def onnx_call(ours, batch, tmp: Path):
    """icezoo's pipeline exported to ONNX (as ``icezoo export`` writes it) in an onnxruntime CPU session
    with torch's thread count: the inference call on the same batch."""
    from icezoo.engine.bench_export import onnx_session
    from icezoo.engine.export import batch_inputs, export_onnx, input_names

    ours.eval()
    export_onnx(ours, tmp / "model.onnx", batch)
    session = onnx_session(tmp / "model.onnx", torch.get_num_threads())
    feeds = batch_inputs(batch, input_names(ours))
    return lambda: session.run(None, feeds)


def _train(model, fn):
    model.train()
    fn().square().mean().backward()
    model.zero_grad(set_to_none=True)


def _infer(model, fn):
    if model is None:  # onnxruntime
        fn()
        return
    model.eval()
    with torch.inference_mode():
        fn()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", type=Path, required=True, help="a fetched copy of DrHB/icecube-2nd-place")
    ap.add_argument("--scope", choices=("pipeline", "backbone"), default="pipeline")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pulses", type=int, default=128)
    ap.add_argument("--peer-dim-base", type=int, default=32, help="the peer Extractor's sinusoids per scalar")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=2, help="steps per model per round")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--phases", default="train,infer")
    ap.add_argument("--onnx", action="store_true", help="also icezoo's pipeline exported to ONNX through "
                                                        "onnxruntime (inference; pipeline scope)")
    ap.add_argument("--malloc-default", action="store_true",
                    help="leave glibc's allocator as it is (default: keep freed memory, as every icezoo command "
                         "does; the setting is process-wide, so both models get it)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: the process's CPU seconds (steadier on a shared machine; with --threads 1 the "
                         "work itself, whoever else runs)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = not args.malloc_default and keep_freed_memory()
    ours, ours_fn, peer, peer_fn, batch = make_models(args, load_peer(args.peer))
    variants = {"icezoo": (ours, ours_fn), "peer": (peer, peer_fn)}
    if args.onnx:
        with tempfile.TemporaryDirectory() as tmp:
            variants["icezoo-onnx"] = (None, onnx_call(ours, batch, Path(tmp)))
    phases = [p for p in ("train", "infer") if p in args.phases.split(",")]
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    times = {(name, phase): [] for name in variants for phase in phases if name != "icezoo-onnx" or phase == "infer"}
    for r in range(args.rounds + 1):  # round 0 warms up
        for phase in phases:
            step = _train if phase == "train" else _infer
            for name, (model, fn) in variants.items():
                if (name, phase) not in times:
                    continue
                t0 = clock()
                for _ in range(args.steps):
                    step(model, fn)
                if r:
                    times[name, phase].append((clock() - t0) / args.steps)
    params = {name: sum(p.numel() for p in m.parameters()) for name, (m, _) in variants.items() if m is not None}
    print(f"scope {args.scope}: batch {args.batch} x {args.pulses} pulses (all real), d192, head width 16, "
          f"4 biased + 4 plain blocks, bias from 16 sinusoids; {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; {args.rounds} rounds x {args.steps} steps, {args.clock} clock; "
          f"allocator keeps freed memory: {'yes' if kept else 'no'}")
    print(f"parameters: icezoo {params['icezoo']:,}, peer {params['peer']:,}")
    for phase in phases:
        ratios = [p / o for p, o in zip(times["peer", phase], times["icezoo", phase])]
        print(f"{phase}: icezoo {1000 * statistics.median(times['icezoo', phase]):.0f} ms, "
              f"peer {1000 * statistics.median(times['peer', phase]):.0f} ms; icezoo {statistics.median(ratios):.2f}x "
              f"as fast (rounds {min(ratios):.2f}-{max(ratios):.2f})")
    if ("icezoo-onnx", "infer") in times:
        ratios = [p / o for p, o in zip(times["peer", "infer"], times["icezoo-onnx", "infer"])]
        print(f"infer, icezoo through onnxruntime: {1000 * statistics.median(times['icezoo-onnx', 'infer']):.0f} ms; "
              f"{statistics.median(ratios):.2f}x as fast as the peer's eager (rounds {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
