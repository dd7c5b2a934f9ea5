"""icezoo's core: interfaces, the batch type, the plugin registry, pipelines and the composer.

The core imports nothing of icezoo outside it (so no plugin). Plugins import only the core, the shared
layers (icezoo.nn), icezoo.resources and their own family (docs/architecture.md).
Names are exported lazily so that ``from icezoo.core.errors import IcezooError`` (the CLI's
error path) does not import torch.
"""

from importlib import import_module

_EXPORTS = {
    "icezoo.core.batch": ("Batch", "PackedPulses", "PulseChunk", "PAD_SENSOR", "N_SENSORS", "angles_to_vector",
                          "vector_to_angles", "angular_error"),
    "icezoo.core.components": ("KINDS", "STAGES", "PROPERTIES", "Component", "ModuleComponent", "Config", "Selection",
                               "FeatureExtractor", "Embedder", "Backbone", "Pooler", "Head", "Loss", "Task",
                               "Pretrainer"),
    "icezoo.core.errors": ("IcezooError",),
    "icezoo.core.hookspecs": ("hookimpl",),
    "icezoo.core.registry": ("defined_components",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'icezoo.core' has no attribute {name!r}")
