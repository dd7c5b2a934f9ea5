"""The training state: the one place that knows what a checkpoint holds, writes it and restores it.

``last.pt`` holds the weights plus optimizer, scheduler, scaler, EMA, RNG states, NaN-guard counters,
history and the step plan it was made under, so a resumed run ends with the weights of an
uninterrupted one; ``best.pt`` holds the (EMA) weights best on validation and that score.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icezoo.core.checkpoint import save_checkpoint
from icezoo.core.errors import IcezooError
from icezoo.engine.checkpoints import load_strict
from icezoo.engine.train.guard import NaNGuard
from icezoo.engine.train.plan import StepPlan, lr_factor


def make_scaler(device_type: str, precision: str):
    return torch.amp.GradScaler(device_type, enabled=(precision == "fp16"), init_scale=2.0**12)


@dataclass
class TrainState:
    """Model (unwrapped), optimizer, schedule, scaler, EMA, guard and counters of a run."""

    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    guard: NaNGuard
    precision: str
    device: torch.device
    ema_decay: float | None = None
    ema: dict[str, torch.Tensor] | None = None
    scaler: Any = None
    step: int = 0
    best_val: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    events_seen: int = 0
    train_time: float = 0.0
    #: (sum, count) of the finite training losses of the current epoch up to the last optimizer step,
    #: saved with ``last`` so a resumed epoch reports the loss of the whole epoch, not of its tail
    epoch_loss: tuple[float, int] = (0.0, 0)

    @classmethod
    def new(cls, model, ts, device: torch.device, plan: StepPlan) -> "TrainState":
        """A fresh state: AdamW (no weight decay on biases and norms), the lr schedule over the plan."""
        decay, no_decay = [], []
        for _, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": ts.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=ts.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(ts.schedule, ts.warmup, plan.optimizer_steps))
        ema = None
        if ts.ema:
            ema = {k: v.detach().clone().to(device) for k, v in model.state_dict().items() if v.is_floating_point()}
        state = cls(model, optimizer, scheduler, NaNGuard(ts.nan_fallback_after), ts.precision, device,
                    ema_decay=ts.ema, ema=ema)
        state.scaler = make_scaler(device.type, state.precision)
        return state

    def set_precision(self, precision: str) -> None:
        """Switch precision (the NaN guard's fallback); the gradient scaler starts over."""
        self.precision = precision
        self.scaler = make_scaler(self.device.type, precision)

    def weights(self) -> dict[str, torch.Tensor]:
        """The weights to validate and keep as best: the EMA ones where there is an EMA."""
        if self.ema is None:
            return self.model.state_dict()
        state = dict(self.model.state_dict())
        state.update(self.ema)
        return state

    def optimizer_step(self, window_bad: bool, ts, dist) -> bool:
        return self.guard.optimizer_step(self.model, self.optimizer, self.scaler, self.scheduler, ts.grad_clip,
                                         window_bad, dist, self.ema, self.ema_decay)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: Path, kind: str, at_step: int, plan: StepPlan, pipeline: dict[str, Any], run_name: str,
             weights: dict[str, torch.Tensor] | None = None) -> None:
        """Write ``best`` (weights and score) or ``last`` (everything :meth:`restore` needs)."""
        tensors = {k: v.detach().cpu() for k, v in (weights or self.model.state_dict()).items()}
        extra: dict[str, Any] = {"kind": kind, "run": run_name, "step": at_step}
        if kind == "last":
            extra.update(
                optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                ema={k: v.detach().cpu() for k, v in self.ema.items()} if self.ema is not None else {},
                rng=rng_state(), guard=self.guard.state(self.precision), best_val=self.best_val,
                history=self.history, epoch_steps=list(plan.epoch_steps), total_steps=plan.total_steps,
                events_seen=self.events_seen, train_time=self.train_time, epoch_loss=list(self.epoch_loss),
            )
        else:
            extra.update(val=self.best_val)
        save_checkpoint(path, pipeline, tensors, provenance=self.model.provenance, **extra)

    def restore(self, ckpt: dict[str, Any], plan: StepPlan, where: str) -> None:
        """Load a ``last`` checkpoint into this state; refuses one made under another step plan."""
        load_strict(self.model, ckpt["state_dict"], where)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.set_precision(ckpt["guard"].get("precision", self.precision))
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.guard.restore(ckpt["guard"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema = {k: v.to(self.device) for k, v in ckpt["ema"].items()}
        self.step = int(ckpt["step"])
        self.best_val = ckpt.get("best_val")
        self.history = list(ckpt.get("history", []))
        self.events_seen = int(ckpt.get("events_seen", 0))
        self.train_time = float(ckpt.get("train_time", 0.0))
        loss_sum, loss_n = ckpt.get("epoch_loss", (0.0, 0))
        self.epoch_loss = (float(loss_sum), int(loss_n))
        then = list(ckpt.get("epoch_steps", plan.epoch_steps))
        common = min(len(then), len(plan.epoch_steps))  # a plan stops at the cap: compare the epochs both hold
        if then[:common] != plan.epoch_steps[:common]:
            raise IcezooError(f"{where}: the data changed since the checkpoint ({plan.epoch_steps} steps per epoch "
                              f"now, {ckpt.get('epoch_steps')} then): cannot resume exactly")
        set_rng_state(ckpt["rng"])


# ---------------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """torch, numpy, python (and CUDA) RNG states as plain data and tensors."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": {"version": int(version), "internal": [int(i) for i in internal],
                   "gauss": None if py_gauss is None else float(py_gauss)},
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state.get("python")
    if p:
        random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
