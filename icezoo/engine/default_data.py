"""The cached simulated dataset that plain ``icezoo train`` uses when no ``--data`` is given.

Made on first use under ``$ICEZOO_CACHE`` (default ``~/.cache/icezoo``) in a directory keyed by
the simulator's version, the seed and the size, built in a temporary directory and renamed into
place (a crash or a concurrent build never leaves a half-written dataset behind).

The event-type mix is the simulator's default (``physics``); ``ICEZOO_SIM_MIX=legacy`` makes the set
with the hand-set mix before issue 23 instead, in its own cache directory (the mix names the key).

Validation protocol: the simulator writes ``n_train + n_val`` independent events into batch files
of ``events_per_batch``; the *last* ``n_val / events_per_batch`` files are the fixed validation
split, never trained on. The split is written next to the data (``icezoo_split.json``) and read by
``icezoo train`` / ``icezoo evaluate``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from icezoo.core.atomic import atomic_directory
from icezoo.core.errors import IcezooError
from icezoo.data import simulator

SPLIT_FILE = "icezoo_split.json"

#: the default set: 10 training files + 2 validation files of 2,000 events each
DEFAULT_TRAIN_EVENTS = 20_000
DEFAULT_VAL_EVENTS = 4_000
DEFAULT_EVENTS_PER_BATCH = 2_000
DEFAULT_SEED = 2023


@dataclass(frozen=True)
class DefaultData:
    path: Path
    train_spec: str
    val_spec: str


def cache_root() -> Path:
    env = os.environ.get("ICEZOO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "icezoo"


def sim_mix() -> str:
    """The event-type mix of the default dataset: ``$ICEZOO_SIM_MIX`` (default ``physics``, the
    simulator's default; ``legacy`` the mix before issue 23); an unknown name is one error line."""
    name = os.environ.get("ICEZOO_SIM_MIX", "").strip() or "physics"
    simulator.mix_knobs(name, where="ICEZOO_SIM_MIX")
    return name


def simulator_version() -> str:
    """The simulator's declared version (``SIMULATOR_VERSION``, bumped with every physics change)."""
    return simulator.SIMULATOR_VERSION


def read_split(data_dir: Path) -> DefaultData | None:
    """The train/val split stored next to a dataset made here (None for foreign data)."""
    f = Path(data_dir) / SPLIT_FILE
    if not f.is_file():
        return None
    info = json.loads(f.read_text(encoding="utf-8"))
    return DefaultData(Path(data_dir), info["train_batches"], info["val_batches"])


def default_dataset(n_train: int = DEFAULT_TRAIN_EVENTS, n_val: int = DEFAULT_VAL_EVENTS,
                    events_per_batch: int = DEFAULT_EVENTS_PER_BATCH, seed: int = DEFAULT_SEED,
                    root: Path | None = None, log=print, test_events: int = 0) -> DefaultData:
    """The cached simulated set (made on first use). Returns its path and split specs."""
    if n_train % events_per_batch or n_val % events_per_batch or n_val <= 0 or n_train <= 0:
        raise IcezooError("default dataset: n_train and n_val must be positive multiples of events_per_batch")
    version = simulator_version()
    mix = sim_mix()
    key = (f"sim-{version}-seed{seed}-n{n_train}+{n_val}-b{events_per_batch}" + (f"-t{test_events}" if test_events else "")
           + ("" if mix == "physics" else f"-mix{mix}"))
    root = Path(root) if root else cache_root()
    final = root / "datasets" / key
    if (final / SPLIT_FILE).is_file():
        return read_split(final)
    make_dataset(final, n_train, n_val, events_per_batch, seed, log=log, test_events=test_events,
                 version=version, **simulator.mix_knobs(mix))
    return read_split(final)


def make_dataset(final: Path, n_train: int, n_val: int, events_per_batch: int, seed: int, log=print,
                 test_events: int = 0, version: str = "", **knobs) -> Path:
    """Simulate into a temporary directory next to ``final``, write the split file, rename
    (``atomic_directory``, the helper the simulator builds its own output with)."""
    final = Path(final)
    n_files_train = n_train // events_per_batch
    n_files_val = n_val // events_per_batch
    if log:
        log(f"simulating the default dataset ({n_train:,} training + {n_val:,} validation events) into {final} "
            f"(once; cached)")
    try:
        with atomic_directory(final) as tmp:
            simulator.simulate(tmp, n_train + n_val, events_per_batch=events_per_batch, seed=seed,
                               test=bool(test_events), test_events=test_events or None, **knobs)
            info = {
                "train_batches": f"1:{n_files_train}",
                "val_batches": f"{n_files_train + 1}:{n_files_train + n_files_val}",
                "seed": seed, "n_train": n_train, "n_val": n_val, "events_per_batch": events_per_batch,
                "simulator_version": version,
                "event_mix": dict(zip(simulator.EVENT_TYPES, simulator.make_config(**knobs).type_fractions.round(4).tolist())),
                "protocol": "the last files are the fixed validation split, never trained on",
            }
            (tmp / SPLIT_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    except OSError:
        # another process finished the same build first (the rename found it in place): keep theirs
        if not (final / SPLIT_FILE).is_file():
            raise
    return final
