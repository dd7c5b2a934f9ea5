"""Registers the repository's registry.toml (the experiment log's named pipelines) and studies.toml
(the shipped studies of ``icezoo reproduce``)."""

from __future__ import annotations

from icezoo.core import hookimpl
from icezoo.resources import registry_toml, studies_toml


@hookimpl
def icezoo_pipeline_files():
    return [registry_toml()]


@hookimpl
def icezoo_study_files():
    return [studies_toml()]
