"""icezoo's dense DynEdge layer against the same layer on torch_geometric's sparse EdgeConv, side by side.

One process, the same batches, the same MLP weights, the same kNN graph (icezoo's dense masked kNN
on the first three features, as DynEdge rebuilds it; torch-cluster's knn_graph, which GraphNeT
calls, has no wheel here). The sparse side gets the graph as an ``edge_index`` over the flattened
real pulses, as GraphNeT's batches are, and runs ``torch_geometric.nn.EdgeConv(phi, aggr="add")``;
the dense side runs :class:`icezoo.nn.graph.EdgeConv` on the padded batch. A layer is the kNN plus
the convolution (plus, for PyG, the conversion to flat tensors it needs); the convolution alone is
timed too. Train = forward + backward, inference = forward under ``torch.inference_mode``.
Every event is filled to ``max_pulses`` (the worst case for the padded layout).

    python benchmarks/dense_vs_pyg_edgeconv.py --max-pulses 128 196 --batch-size 16 --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import platform
import time

import torch


def best_ms(fn, repeats: int, warmup: int = 1, sync=lambda: None, clock=time.perf_counter) -> float:
    """Best of ``repeats`` calls in ms, on ``clock`` (wall, or the process's CPU time: steadier on a
    shared machine, where other jobs stretch wall time but not the CPU time this process uses)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        sync()
        times.append(clock() - t0)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-pulses", type=int, nargs="+", default=[128, 196])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--width", type=int, default=256, help="input width of the layer (DynEdge's 2nd-4th: 256)")
    parser.add_argument("--mlp", type=int, nargs="+", default=[336, 256], help="EdgeConv MLP widths")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: process CPU time (use with --threads 1 on a shared machine)")
    args = parser.parse_args()

    from torch_geometric.nn import EdgeConv as PyGEdgeConv

    from icezoo.core.synthetic import synthetic_batch
    from icezoo.nn.graph import EdgeConv, edge_mlp, knn_graph, to_edge_index

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    machine = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {machine}; batch {args.batch_size}, width {args.width}, "
          f"MLP {args.mlp}, k {args.k}, best of {args.repeats}, {args.clock} clock")
    print("max_pulses | phase | dense layer ms | PyG layer ms | PyG/dense | dense conv ms | PyG conv ms | PyG/dense")
    torch.manual_seed(0)
    phi = edge_mlp(args.width, args.mlp, "leaky_relu").to(dev)
    dense, sparse = EdgeConv(phi, aggr="sum"), PyGEdgeConv(phi, aggr="add")
    for length in args.max_pulses:
        batch = synthetic_batch(args.width, [length] * args.batch_size, seed=length).to(dev)
        mask = batch.mask
        x = batch.features
        index, valid = knn_graph(x[..., :3], mask, args.k, time=batch.xyzt[..., 3])
        edge_index = to_edge_index(index, valid, mask)
        flat = x[mask]
        # the same function: check before timing
        assert torch.allclose(dense(x, mask, index, valid)[mask], sparse(flat, edge_index), atol=1e-4)

        def dense_layer():
            i, v = knn_graph(x[..., :3], mask, args.k, time=batch.xyzt[..., 3])
            return dense(x, mask, i, v)

        def sparse_layer():
            i, v = knn_graph(x[..., :3], mask, args.k, time=batch.xyzt[..., 3])
            return sparse(x[mask], to_edge_index(i, v, mask))

        cases = {"layer": (dense_layer, sparse_layer),
                 "conv": (lambda: dense(x, mask, index, valid), lambda: sparse(flat, edge_index))}
        for phase in ("train", "inference"):
            row = []
            for name, (fd, fs) in cases.items():
                if phase == "train":
                    run_d = lambda f=fd: f().square().mean().backward()  # noqa: E731
                    run_s = lambda f=fs: f().square().mean().backward()  # noqa: E731
                else:
                    def run_d(f=fd):
                        with torch.inference_mode():
                            f()

                    def run_s(f=fs):
                        with torch.inference_mode():
                            f()
                td = best_ms(run_d, args.repeats, sync=sync, clock=clock)
                ts = best_ms(run_s, args.repeats, sync=sync, clock=clock)
                row += [f"{td:.1f}", f"{ts:.1f}", f"{ts / td:.2f}"]
                phi.zero_grad(set_to_none=True)
            print(f"{length} | {phase} | " + " | ".join(row))


if __name__ == "__main__":
    main()
