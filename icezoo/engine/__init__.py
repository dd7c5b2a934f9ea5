"""The engine: training, evaluation, prediction, the run ledger and benchmarks.

* :mod:`~icezoo.engine.device`: the device, the torchrun process group, autocast per precision;
* :mod:`~icezoo.engine.loaders`: the training and evaluation loaders;
* :mod:`~icezoo.engine.checkpoints`: checkpoint -> model (predict, evaluate, fine-tune, resume);
* :mod:`~icezoo.engine.train`: the training loop (a package);
* :mod:`~icezoo.engine.predict`, :mod:`~icezoo.engine.evaluate`, :mod:`~icezoo.engine.bench`: the other commands;
* :mod:`~icezoo.engine.bench_data` (``bench data``/``sim``), :mod:`~icezoo.engine.baseline` (``linefit``),
  :mod:`~icezoo.engine.smoke` (``compose``'s forward/backward try): the work behind the smaller commands;
* :mod:`~icezoo.engine.runs` (:class:`~icezoo.engine.runs.RunDir`, the one reader and writer of a run's
  files, and the ledger), :mod:`~icezoo.engine.default_data`: the cached simulated set.

Engine modules import what they need at the top (bench_data alone waits, so that its simulator timing
pins numpy's threads first and its peak memory does not count torch); the CLI (``icezoo.cli``, a module
per command) imports the engine inside its commands, so ``icezoo --help`` and ``icezoo list`` never load it.
"""
