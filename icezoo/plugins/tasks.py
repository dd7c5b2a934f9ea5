"""Tasks: targets beside the direction, each a small MLP head on the pooled event vector with its own loss.

Energy, event type, vertex, and any truth column by name (a generic regression or classification),
after GraphNeT's ``task/reconstruction.py`` and ``task/classification.py``. Truth column names are
those of :mod:`icezoo.data.truth` (``energy``, ``track``, ``event_class``, ``vertex_x``, ...). Every
task here predicts its own uncertainty where it regresses (a Gaussian or Laplace negative
log-likelihood, as GraphNeT's energy-with-uncertainty tasks), so a physicist gets a per-event
error bar, and classifications give probabilities.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from icezoo.core import Config, Task
from icezoo.nn import mlp

#: the simulator's three event types, in the order of the ``event_class`` truth column
EVENT_CLASSES = ("through_going_track", "starting_track", "cascade")
#: sigma never falls below this fraction of the task's scale (a zero sigma makes the NLL -inf)
MIN_SIGMA = 1e-3


class _TaskConfig(Config):
    hidden: int = Field(64, ge=1, description="hidden width of the head's 2-layer MLP")


def _head(in_dim: int, hidden: int, out: int) -> torch.nn.Module:
    return mlp(in_dim, [hidden], out)


def _sigma(raw: torch.Tensor) -> torch.Tensor:
    """A positive width from a raw output (softplus, floored at MIN_SIGMA)."""
    return F.softplus(raw) + MIN_SIGMA


def _nll(residual: torch.Tensor, sigma: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-event negative log-likelihood of a residual under a Gaussian (sigma = its standard deviation)
    or a Laplace law (sigma = its scale b), constants included."""
    if kind == "laplace":
        return residual.abs() / sigma + torch.log(2 * sigma)
    return 0.5 * (residual / sigma) ** 2 + torch.log(sigma) + 0.5 * math.log(2 * math.pi)


class _ByColumn:
    """The generic tasks' shared rule: one truth column, named by ``config.column``, also the task's name."""

    @classmethod
    def default_task_name(cls, config) -> str:
        return config.column

    @classmethod
    def columns(cls, config) -> tuple[str, ...]:
        return (config.column,)


class _Regression(Task):
    """Shared by the scalar regressions: [B, 2] = (value, raw width) -> (value, sigma) and the NLL."""

    def __init__(self, config, in_dim: int):
        super().__init__(config, in_dim)
        self.net = _head(in_dim, config.hidden, 2)
        self.out_dim = 2

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)

    def _target(self, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        return truth[self.config.column]

    def _mean_sigma(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return c.offset + c.scale * out[:, 0], c.scale * _sigma(out[:, 1])

    def loss_terms(self, out: torch.Tensor, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        mean, sigma = self._mean_sigma(out)
        # in units of the scale, so the loss is of order one whatever the column's units
        return _nll((self._target(truth) - mean) / self.config.scale, sigma / self.config.scale, self.config.nll)


class Energy(_Regression):
    """log10 of the neutrino energy (GeV) with a predicted uncertainty: Gaussian or Laplace NLL (GraphNeT
    task/reconstruction.py, EnergyReconstructionWithUncertainty, on log10 E)."""

    name = "energy"
    family = "energy"

    class Config(_TaskConfig):
        column: str = Field("energy", description="truth column holding the energy in GeV")
        nll: Literal["gaussian", "laplace"] = Field("gaussian", description="likelihood of log10 E given the "
                                                    "prediction; its width is energy_sigma")
        offset: float = Field(3.0, description="log10 GeV the untrained head starts at (the sample's typical "
                              "energy: 1000 GeV for the simulator)")
        scale: float = Field(1.0, gt=0, description="log10 units per unit of the head's output")

    @classmethod
    def columns(cls, config) -> tuple[str, ...]:
        return (config.column,)

    def _target(self, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        energy = truth[self.config.column]
        return torch.log10(torch.where(energy > 0, energy, 1.0))  # left-out events: finite (their term is dropped)

    def valid(self, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        energy = truth[self.config.column]
        return torch.isfinite(energy) & (energy > 0)

    def outputs(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, sigma = self._mean_sigma(out)
        return {"energy": mean, "energy_sigma": sigma}

    def example_truth(self, signal: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.config.column: 10.0 ** (self.config.offset + signal)}


class Regression(_ByColumn, _Regression):
    """Any numeric truth column by name (e.g. inelasticity, track_length), with a predicted uncertainty:
    Gaussian or Laplace NLL, optionally on log10 of the column (GraphNeT task/reconstruction.py)."""

    name = "regression"
    family = "regression"
    example_params = {"column": "energy"}

    class Config(_TaskConfig):
        column: str = Field(description="truth column to predict (its name is the output column's)")
        log10: bool = Field(False, description="predict log10 of the column (positive values only)")
        nll: Literal["gaussian", "laplace"] = "gaussian"
        offset: float = Field(0.0, description="the untrained head's prediction (in the predicted units)")
        scale: float = Field(1.0, gt=0, description="predicted units per unit of the head's output (the "
                             "column's typical spread: keeps the loss of order one)")

    def _target(self, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        value = truth[self.config.column]
        return torch.log10(torch.where(value > 0, value, 1.0)) if self.config.log10 else value

    def valid(self, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        value = truth[self.config.column]
        return torch.isfinite(value) & (value > 0 if self.config.log10 else True)

    def outputs(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, sigma = self._mean_sigma(out)
        name = f"log10_{self.config.column}" if self.config.log10 else self.config.column
        return {name: mean, f"{name}_sigma": sigma}

    def example_truth(self, signal: torch.Tensor) -> dict[str, torch.Tensor]:
        value = self.config.offset + self.config.scale * signal
        return {self.config.column: 10.0 ** value if self.config.log10 else value}


class _Classes(Task):
    """Shared by the classifications: [B, K] logits, cross-entropy with optional class weights."""

    family = "classification"

    def __init__(self, config, in_dim: int):
        super().__init__(config, in_dim)
        self.out_dim = len(self.labels())
        self.net = _head(in_dim, config.hidden, self.out_dim)
        weights = config.class_weights or [1.0] * self.out_dim
        if len(weights) != self.out_dim:
            raise ValueError(f"class_weights has {len(weights)} entries for {self.out_dim} classes")
        self.register_buffer("class_weight", torch.tensor(weights, dtype=torch.float32), persistent=False)

    @abstractmethod
    def labels(self) -> tuple[str, ...]:
        """The class names, in logit order (the output columns are p_<label>)."""

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)

    @abstractmethod
    def _classes(self, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        """The true class index of every event (float; -1 for none)."""

    def valid(self, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._classes(truth) >= 0

    def loss_terms(self, out: torch.Tensor, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        y = self._classes(truth).clamp_min(0).long()
        return self.class_weight.to(out.dtype)[y] * F.cross_entropy(out, y, reduction="none")

    def outputs(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        p = torch.softmax(out, dim=-1)
        return {f"p_{label}": p[:, k] for k, label in enumerate(self.labels())}


def _weights_field():
    return Field(None, description="per-class weights of the cross-entropy terms, in class order (None: all 1)")


class EventType(_Classes):
    """Track vs cascade (p_track), or the simulator's three event types; cross-entropy with class
    weights (GraphNeT task/classification.py, BinaryClassificationTask / MulticlassClassificationTask)."""

    name = "event_type"

    class Config(_TaskConfig):
        classes: Literal["track", "simulator"] = Field("track", description="'track': track vs cascade (truth "
                                                       "column 'track'); 'simulator': through-going track, "
                                                       "starting track, cascade (truth column 'event_class')")
        class_weights: list[float] | None = _weights_field()

        @field_validator("class_weights")
        @classmethod
        def _positive(cls, value):
            if value is not None and any(not (w > 0 and math.isfinite(w)) for w in value):
                raise ValueError("class weights must be finite and positive")
            return value

    @classmethod
    def columns(cls, config) -> tuple[str, ...]:
        return ("track",) if config.classes == "track" else ("event_class",)

    def labels(self) -> tuple[str, ...]:
        return ("cascade", "track") if self.config.classes == "track" else EVENT_CLASSES

    def _classes(self, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        y = truth[type(self).columns(self.config)[0]]
        ok = torch.isfinite(y) & (y >= 0) & (y < self.out_dim) & (y == torch.round(y))
        return torch.where(ok, y, -1.0)

    def outputs(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.config.classes == "track":  # one column: the probability of a track
            return {"p_track": torch.softmax(out, dim=-1)[:, 1]}
        return super().outputs(out)

    def example_truth(self, signal: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.out_dim  # class k where the signal lies in the k-th of K equal bins of [-1, 1]
        return {type(self).columns(self.config)[0]: ((signal + 1) / 2 * k).floor().clamp(0, k - 1)}


class Classification(_ByColumn, _Classes):
    """Any truth column whose values name classes (e.g. pid, interaction_type): cross-entropy with class
    weights, one probability per listed value (GraphNeT task/classification.py, MulticlassClassificationTask)."""

    name = "classification"
    example_params = {"column": "track"}

    class Config(_TaskConfig):
        column: str = Field(description="truth column holding the class of each event")
        values: list[float] = Field([0.0, 1.0], min_length=2, description="the column's value of each class; "
                                    "events with another value are left out of the loss")
        class_weights: list[float] | None = _weights_field()

        @model_validator(mode="after")
        def _distinct(self):
            if len(set(self.values)) != len(self.values):
                raise ValueError("values must be distinct")
            return self

    def labels(self) -> tuple[str, ...]:
        return tuple(f"{self.config.column}_{v:g}" for v in self.config.values)

    def example_truth(self, signal: torch.Tensor) -> dict[str, torch.Tensor]:
        k = ((signal + 1) / 2 * self.out_dim).floor().clamp(0, self.out_dim - 1).long()
        return {self.config.column: torch.tensor(self.config.values, dtype=signal.dtype)[k]}

    def _classes(self, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        y = truth[self.config.column]
        out = torch.full_like(y, -1.0)
        for k, value in enumerate(self.config.values):
            out = torch.where(y == value, float(k), out)
        return out


class Vertex(Task):
    """The interaction vertex (x, y, z in detector metres) with one predicted uncertainty per event: an
    isotropic 3-D Gaussian NLL (GraphNeT task/reconstruction.py, PositionReconstruction, plus a width)."""

    name = "vertex"
    family = "vertex"

    class Config(_TaskConfig):
        scale: float = Field(500.0, gt=0, description="metres per unit of the head's output (the detector's "
                             "half size: keeps the loss of order one)")
        max_distance: float | None = Field(None, gt=0, description="leave out of the loss events whose true "
                                           "vertex lies further than this from the detector centre (m), e.g. "
                                           "through-going muons' far upstream vertices; None: every event")

    def __init__(self, config, in_dim: int):
        super().__init__(config, in_dim)
        self.net = _head(in_dim, config.hidden, 4)
        self.out_dim = 4

    @classmethod
    def columns(cls, config) -> tuple[str, ...]:
        return ("vertex_x", "vertex_y", "vertex_z")

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)

    def _truth(self, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([truth["vertex_x"], truth["vertex_y"], truth["vertex_z"]], dim=-1)

    def valid(self, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        ok = super().valid(truth)
        if self.config.max_distance is not None:
            ok = ok & (torch.nan_to_num(self._truth(truth), nan=math.inf).norm(dim=-1) <= self.config.max_distance)
        return ok

    def loss_terms(self, out: torch.Tensor, truth: dict[str, torch.Tensor]) -> torch.Tensor:
        residual = self._truth(truth) / self.config.scale - out[:, :3]
        sigma = _sigma(out[:, 3])
        return (0.5 * (residual ** 2).sum(-1) / sigma ** 2 + 3 * torch.log(sigma) + 1.5 * math.log(2 * math.pi))

    def example_truth(self, signal: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"vertex_x": 300.0 * signal, "vertex_y": -200.0 * signal, "vertex_z": 400.0 * signal ** 2 - 200.0}

    def outputs(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        xyz = self.config.scale * out[:, :3]
        return {"vertex_x": xyz[:, 0], "vertex_y": xyz[:, 1], "vertex_z": xyz[:, 2],
                "vertex_sigma": self.config.scale * _sigma(out[:, 3])}
