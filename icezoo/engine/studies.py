"""Studies: one question of the experiment log, declared in TOML and answered by ``icezoo reproduce``.

A study (``[studies.NAME]`` in studies.toml, or in a plugin's file from the ``icezoo_study_files``
hook) names variants, each a pipeline and/or ``--set`` overrides, and a reference variant the others
are compared with. Every variant trains at one common budget (events seen, or minutes of wall clock
turned into a fixed step count on this machine), on the same training files with the same seeds,
at one common model size (``size``: overrides applied to every variant, so that a study of losses is
not a study of model sizes), and is scored on the same validation events::

    [studies.pooling_mask]
    question = "Does pooling over the real pulses (the mask) beat pooling over the padded sequence?"
    experiments = ["EXP_00", "EXP_01"]
    reference = "unmasked"
    budget = "30k"                 # events seen; "5min" = minutes of wall clock
    seeds = [0]
    size = { "embedder.dim" = 32, "backbone.depth" = 2, "backbone.heads" = 4 }
    common = { "selection.max_pulses" = 64, "train.batch_size" = 64 }
    [studies.pooling_mask.variants]
    unmasked = { pipeline = "BASELINE_HF", log_score = "1.182" }
    masked = { pipeline = "BASELINE_HF_V1", log_score = "1.169", log = "better" }

A variant given as a plain string is a pipeline name. ``init_from = "LABEL"`` fine-tunes a variant
from another variant's run of the same seed (trained first). ``pretrain = { mask_ratio = 0.5 }`` makes
a variant an ``icezoo pretrain`` run (that objective table) that others fine-tune from, never scored;
``reference = "LABEL"`` compares a variant with another variant than the study's reference. ``log`` is what the log found for the
variant against the reference (better / worse / same / unknown); the report reads the measured
paired difference against it. Errors name the file and the path: ``FILE: studies.X.variants.Y.pipeline: ...``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from icezoo import zoo  # registry() looked up when called: a replaced one (tests) is used
from icezoo.core.errors import IcezooError, format_validation_error
from icezoo.core.names import add_once, did_you_mean, normalise, read_toml
from icezoo.core.pipelines import pipeline_config, resolved_table


#: variant labels and study names become file and directory names (RUNS/studies/NAME-.../LABEL-sN)
LABEL_RE = r"[A-Za-z0-9_.-]+"
NAME_RE = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"  # never '..' nor a hidden name ('.stale' is the study's own)


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: the pipeline to train (default: the study's ``pipeline``)
    pipeline: str | None = None
    #: ``--set`` overrides, applied after the study's ``size`` and ``common``
    set: dict[str, Any] = Field(default_factory=dict)
    #: fine-tune from this variant's run of the same seed
    init_from: str | None = None
    #: what the log found for this variant against the reference, and the log's score
    log: Literal["better", "worse", "same", "unknown"] = "unknown"
    log_score: str = ""
    description: str = ""
    #: an ``icezoo pretrain`` run with this objective table ({} for its defaults) on the training files,
    #: labels unused: never scored itself, the variants that name it in ``init_from`` fine-tune from it
    pretrain: dict[str, Any] | None = None
    #: the variant this one is compared with (default: the study's ``reference``)
    reference: str | None = None


#: the largest budgets: 10^10 events, a week of wall clock (a typo such as 99999999999999999999 would
#: otherwise start a study that never ends)
MAX_EVENTS = 1e10
MAX_MINUTES = 7 * 24 * 60


class Budget(BaseModel):
    """Events seen per variant (the default), or minutes of wall clock."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    events: int | None = None
    minutes: float | None = None

    @classmethod
    def parse(cls, value: Any) -> "Budget":
        """``30000``, ``"30k"``, ``"30k events"``, ``"1.5M"``; ``"5min"``, ``"5 minutes"``, ``"90s"``."""
        if isinstance(value, Budget):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"expected events (30000, '30k') or wall clock ('5min'), not {value!r}")
        text = str(value).strip().lower().replace("_", "").replace(",", "")
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(k|m)?\s*(?:events?)?", text)
        if m:
            events = float(m.group(1)) * {None: 1, "k": 1e3, "m": 1e6}[m.group(2)]
            if events < 1:
                raise ValueError(f"budget {value!r}: at least one event")
            if events > MAX_EVENTS:
                raise ValueError(f"budget {value!r}: at most {MAX_EVENTS:,.0f} events per variant and seed "
                                 f"(about 75 passes over the whole Kaggle training set)")
            return cls(events=int(round(events)))
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(min|mins|minutes?|s|sec|seconds?)", text)
        if m:
            minutes = float(m.group(1)) / (60.0 if m.group(2).startswith("s") else 1.0)
            if minutes <= 0:
                raise ValueError(f"budget {value!r}: must be positive")
            if minutes > MAX_MINUTES:
                raise ValueError(f"budget {value!r}: at most {MAX_MINUTES:,} minutes (a week) per variant and seed")
            return cls(minutes=minutes)
        raise ValueError(f"budget {value!r}: expected events (30000, '30k', '1.5M') or wall clock ('5min', '90s')")

    def __str__(self) -> str:
        if self.events is not None:
            return f"{self.events:,} events"
        return f"{self.minutes:g} min" if self.minutes >= 1 else f"{self._seconds:g} s"

    @property
    def _seconds(self) -> float:
        return round(self.minutes * 60.0, 3)

    @property
    def slug(self) -> str:
        """The budget in a folder name: 30k, 250ev, 5min, 90s (never 0.166667min)."""
        if self.events is not None:
            return f"{self.events // 1000}k" if self.events % 1000 == 0 else f"{self.events}ev"
        if self.minutes >= 1 and float(self.minutes).is_integer():
            return f"{self.minutes:g}min"
        return f"{self._seconds:g}s"

    def steps(self, batch_size: int) -> int | None:
        """Loader steps of an events budget (None for a wall-clock budget: measured per variant)."""
        return None if self.events is None else max(1, math.ceil(self.events / batch_size))


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    question: str
    #: the log rows this study asks about, and what the log found (text)
    experiments: list[str] = Field(default_factory=list)
    log: str = ""
    #: the pipeline of variants that do not name one
    pipeline: str | None = None
    reference: str
    variants: dict[str, Variant]
    budget: Budget = Field(default_factory=lambda: Budget(events=30_000))
    seeds: list[int] = Field(default_factory=lambda: [0])
    size: dict[str, Any] = Field(default_factory=dict)
    common: dict[str, Any] = Field(default_factory=dict)
    file: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        """The name becomes a directory under RUNS/studies/: a path ("../x") must not escape it."""
        if not re.fullmatch(NAME_RE, value):
            raise ValueError(f"study name '{value}': use letters, digits, '_', '-', '.' (not first)")
        return value

    @field_validator("variants", mode="before")
    @classmethod
    def _variants(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("must be a table of variants")
        return {k: {"pipeline": v} if isinstance(v, str) else v for k, v in value.items()}

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> Budget:
        return Budget.parse(value)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("needs at least one seed")
        if len(set(value)) != len(value):
            raise ValueError("seeds repeat")
        bad = [s for s in value if not 0 <= s < 2**32]  # numpy's seeds; a run name holds the seed
        if bad:
            raise ValueError(f"seed {bad[0]}: seeds are whole numbers from 0 to 2^32 - 1")
        return value

    @model_validator(mode="after")
    def _labels(self) -> "Study":
        if len(self.variants) < 2:
            raise ValueError("needs at least two variants (a reference and one to compare)")
        if self.reference not in self.variants:
            raise ValueError(f"reference '{self.reference}' is not a variant (variants: {', '.join(self.variants)})")
        for label, v in self.variants.items():
            if not re.fullmatch(LABEL_RE, label):
                raise ValueError(f"variant label '{label}': use letters, digits, '_', '-', '.'")
            if v.pipeline is None and self.pipeline is None:
                raise ValueError(f"variant '{label}' names no pipeline and the study has no 'pipeline'")
            if v.init_from is not None and v.init_from not in self.variants:
                raise ValueError(f"variant '{label}': init_from '{v.init_from}' is not a variant")
            ref = v.reference or self.reference
            if v.reference is not None and (ref not in self.variants or ref == label):
                raise ValueError(f"variant '{label}': reference '{ref}' is not another variant")
            if v.pretrain is not None and (label == self.reference or v.reference is not None):
                raise ValueError(f"variant '{label}': a pretraining variant is not scored: it can be neither a "
                                 f"reference nor compared")
            if self.variants[ref].pretrain is not None and label != ref and v.pretrain is None:
                raise ValueError(f"variant '{label}': reference '{ref}' is a pretraining variant (not scored)")
        for label in self.variants:  # init_from chains must end
            seen, cur = [label], self.variants[label].init_from
            while cur is not None:
                if cur in seen:
                    raise ValueError(f"variant '{label}': init_from cycle {' -> '.join([*seen, cur])}")
                seen.append(cur)
                cur = self.variants[cur].init_from
        return self

    def pipeline_of(self, label: str) -> str:
        return self.variants[label].pipeline or self.pipeline  # type: ignore[return-value]

    def overrides(self, label: str) -> dict[str, Any]:
        """The ``--set`` overrides of a variant: size, then common, then its own; every variant
        trains on the same files (``train.batches``, default all training files: ``cycle``)."""
        return {"train.batches": "cycle", **self.size, **self.common, **self.variants[label].set}

    def order(self) -> list[str]:
        """Variant labels with every init_from source before the variants fine-tuned from it."""
        out: list[str] = []

        def visit(label: str) -> None:
            if label in out:
                return
            src = self.variants[label].init_from
            if src is not None:
                visit(src)
            out.append(label)

        for label in self.variants:
            visit(label)
        return out

    def compared(self) -> list[str]:
        """The variants compared with a reference (every scored one but the study's reference)."""
        return [label for label in self.scored() if label != self.reference]

    def scored(self) -> list[str]:
        """The variants scored on the validation events (not the pretraining ones)."""
        return [label for label, v in self.variants.items() if v.pretrain is None]

    def reference_of(self, label: str) -> str:
        return self.variants[label].reference or self.reference


def parse_study_file(path: str | Path, reg=None) -> dict[str, Study]:
    """The studies of one file, validated (schema, variant references, pipelines named)."""
    path = Path(path)
    data = read_toml(path)
    tables = data.get("studies", {})
    if not isinstance(tables, dict):
        raise IcezooError(f"{path}: 'studies' must be a table of [studies.NAME] tables")
    unknown = [k for k in data if k != "studies"]
    if unknown:
        raise IcezooError(f"{path}: {unknown[0]}: unknown top-level table (a study file holds [studies.NAME] tables)")
    out: dict[str, Study] = {}
    for name, table in tables.items():
        where = f"{path}: studies.{name}"
        if not isinstance(table, dict):
            raise IcezooError(f"{where}: must be a table")
        try:
            study = Study.model_validate({**table, "name": name, "file": str(path)})
        except ValidationError as exc:
            raise IcezooError(f"{path}: " + format_validation_error(f"studies.{name}", exc)) from None
        if reg is not None:
            for label in study.variants:
                try:
                    reg.pipelines.find(study.pipeline_of(label))
                except IcezooError as exc:  # the field that names it: the variant's, else the study's
                    field = f"variants.{label}.pipeline" if study.variants[label].pipeline else "pipeline"
                    raise IcezooError(f"{where}.{field}: {exc}") from None
        out[name] = study
    return out


def load_studies(reg=None) -> dict[str, Study]:
    """Every study of every registered study file (the shipped studies.toml and plugins' files);
    a name defined twice is an error naming both files."""
    reg = reg or zoo.registry()
    studies: dict[str, Study] = {}
    for path in reg.study_files:
        for name, study in parse_study_file(path, reg).items():
            add_once(studies, name, study, path, "study")
    return studies


def get_study(name: str, reg=None) -> Study:
    studies = load_studies(reg)
    key = normalise(name)
    if key in studies:
        return studies[key]
    hint = did_you_mean(name, (study.name for study in studies.values()))
    raise IcezooError(f"unknown study '{name}'{hint} (icezoo reproduce --list shows them)")


def variant_config(study: Study, label: str, reg=None):
    """The variant's resolved PipelineConfig (its overrides applied), with one-line errors."""
    reg = reg or zoo.registry()
    where = f"{study.file}: studies.{study.name}.variants.{label}"
    try:
        config = pipeline_config(study.pipeline_of(label), reg=reg)
        config = config.with_overrides(study.overrides(label), where=f"{where}.set")
        resolved_table(config, reg)  # component names and params
    except IcezooError as exc:
        text = str(exc)
        raise IcezooError(text if text.startswith(where) else f"{where}: {text}") from None
    if config.init_from and study.variants[label].init_from is None:
        raise IcezooError(f"{where}: pipeline {config.name} fine-tunes from {config.init_from}; "
                          f"say which variant it starts from (init_from = \"LABEL\")")
    return config
