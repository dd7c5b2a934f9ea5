"""Shared test helpers: a tiny pipeline description and an in-process CLI call.

Imported by the test modules (pytest puts ``tests/`` on sys.path); tiny sizes keep the suite fast.
"""

from __future__ import annotations


def tiny_pipeline(name: str = "tiny", *, max_pulses: int = 32, dim: int = 16, depth: int = 1,
                  pooler: str = '["mean", "max"]', epochs: float | None = 2, description: str = "tiny test pipeline") -> str:
    """A ``[pipelines.NAME]`` table: kaggle_norm, time order, linear -> transformer -> pooler -> vMF."""
    train = "" if epochs is None else f"train = {{ batch_size = 32, epochs = {epochs:g}, lr = 3e-3 }}\n"
    return f"""
[pipelines.{name}]
description = "{description}"
features = [{{ name = "kaggle_norm" }}]
selection = {{ name = "time_order", max_pulses = {max_pulses} }}
embedder = {{ name = "linear", dim = {dim} }}
backbone = {{ name = "transformer", depth = {depth}, heads = 2 }}
pooler = {pooler}
head = {{ name = "direction_kappa" }}
loss = [{{ name = "vmf3d" }}]
{train}"""


def cli(*args, expect: int = 0) -> None:
    """Run ``icezoo ARGS`` in this process and check its exit code."""
    from icezoo.cli.main import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    assert code == expect, f"icezoo {' '.join(map(str, args))} exited {code}, expected {expect}"
