"""The engine: training, evaluation, prediction, the run ledger and benchmarks.

* :mod:`~icezoo.engine.device`: the device, the torchrun process group, autocast per precision;
* :mod:`~icezoo.engine.loaders`: the training and evaluation loaders;
* :mod:`~icezoo.engine.checkpoints`: checkpoint -> model (predict, evaluate, fine-tune, resume);
* :mod:`~icezoo.engine.train`: the training loop (a package);
* :mod:`~icezoo.engine.predict`, :mod:`~icezoo.engine.evaluate`, :mod:`~icezoo.engine.bench`: the other commands;
* :mod:`~icezoo.engine.runs`, :mod:`~icezoo.engine.default_data`: the run ledger and the cached simulated set.

Engine modules import what they need at the top; the CLI (``icezoo.cli``, a module per command) imports the
engine inside its commands, so ``icezoo --help`` and ``icezoo list`` never load it.
"""
