"""The NaN guard: a non-finite loss or gradient skips the optimizer step and is counted; after
``train.nan_fallback_after`` skipped steps a bf16/fp16 run falls back to fp32 by itself (the log's
NaNs of EXP_03/04/21); many consecutive skips in fp32 stop the run as diverged."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as td

from icezoo.core.errors import IcezooError

#: the counters run.json and the ledger show
PUBLIC = ("skipped", "loss_nonfinite", "grad_nonfinite", "fp16_overflows", "fell_back_to_fp32_at_step")


class NaNGuard:
    """Counts and decides; the counters travel in checkpoints (:meth:`state` / :meth:`restore`)."""

    def __init__(self, fallback_after: int):
        self.fallback_after = fallback_after
        self.counts: dict[str, Any] = {"skipped": 0, "loss_nonfinite": 0, "grad_nonfinite": 0, "fp16_overflows": 0,
                                       "fell_back_to_fp32_at_step": None, "skipped_since_precision": 0,
                                       "consecutive": 0}

    def public(self) -> dict[str, Any]:
        return {k: self.counts[k] for k in PUBLIC}

    def state(self, precision: str) -> dict[str, Any]:
        """What a checkpoint keeps: every counter and the precision the run is in."""
        return {**self.counts, "precision": precision}

    def restore(self, saved: dict[str, Any]) -> None:
        self.counts.update({k: v for k, v in saved.items() if k in self.counts})

    def loss_nonfinite(self) -> None:
        self.counts["loss_nonfinite"] += 1

    def optimizer_step(self, model, optimizer, scaler, scheduler, grad_clip, window_bad: bool, dist,
                       ema: dict | None, ema_decay: float | None) -> bool:
        """Clip, check, step (or skip) at an accumulation boundary. Returns True when skipped."""
        c = self.counts
        params = [p for p in model.parameters() if p.grad is not None]
        overflow = False
        if scaler.is_enabled():
            scaler.unscale_(optimizer)
        if params:
            norm = torch.nn.utils.clip_grad_norm_(params, grad_clip or float("inf"))
            grad_ok = bool(torch.isfinite(norm))
        else:
            grad_ok = True
        bad = window_bad or not grad_ok
        if dist.enabled:  # one rank's bad gradient skips the step on every rank
            flag = torch.tensor([1.0 if bad else 0.0], device=params[0].device if params else "cpu")
            td.all_reduce(flag, op=td.ReduceOp.MAX)
            bad = bool(flag.item() > 0)
        if bad:
            if not window_bad and not grad_ok:
                if scaler.is_enabled():
                    overflow = True
                    c["fp16_overflows"] += 1
                else:
                    c["grad_nonfinite"] += 1
            c["skipped"] += 1
            if not overflow:
                c["skipped_since_precision"] += 1
            if scaler.is_enabled():
                for p in params:  # make the scaler see the skip (found_inf) and lower its scale
                    p.grad = None
                scaler.update(scaler.get_scale() * 0.5)
        else:
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        if k in ema:
                            ema[k].mul_(ema_decay).add_(v.detach(), alpha=1.0 - ema_decay)
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        return bad

    def after_window(self, skipped: bool, step: int, precision: str, log, run_dir) -> str:
        """Log a skipped step; returns the precision to go on in (fp32 after a fallback)."""
        c = self.counts
        if not skipped:
            c["consecutive"] = 0
            return precision
        c["consecutive"] += 1
        log(f"NaN guard: step {step}: non-finite loss or gradient, optimizer step skipped ({c['skipped']} so far)",
            echo=False)
        if precision != "fp32" and c["skipped_since_precision"] >= self.fallback_after:
            log(f"NaN guard: {c['skipped_since_precision']} skipped steps in {precision}: "
                f"falling back to fp32 from step {step}")
            c["fell_back_to_fp32_at_step"] = step
            c["skipped_since_precision"] = 0
            return "fp32"
        if c["consecutive"] >= max(50, 10 * self.fallback_after):
            raise IcezooError(f"training diverged: {c['consecutive']} consecutive non-finite steps in fp32 "
                              f"(run {run_dir})")
        return precision

    def summary(self) -> str:
        """The closing log line's NaN-guard part ('' when no step was skipped)."""
        c = self.counts
        if not c["skipped"]:
            return ""
        fell = c["fell_back_to_fp32_at_step"]
        return (f"NaN guard: {c['skipped']} optimizer steps skipped"
                + (f"; fell back to fp32 at step {fell}" if fell is not None else ""))
