"""The engine: training, evaluation, prediction, the run ledger and benchmarks.

Modules import torch and the zoo lazily; the CLI (``icezoo.cli.engine``) calls
:func:`icezoo.engine.train.train`, :func:`icezoo.engine.evaluate.evaluate`,
:func:`icezoo.engine.predict.predict`, :func:`icezoo.engine.runs.ledger_rows` and
:func:`icezoo.engine.bench.bench_model`.
"""
