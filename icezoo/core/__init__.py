"""icezoo's core: interfaces, the batch type, the plugin registry, pipelines and the composer.

The core imports no plugin. Plugins import only the core (and shared layers such as icezoo.nn).
"""

from icezoo.core.batch import (N_SENSORS, PAD_SENSOR, Batch, PulseChunk, angles_to_vector, angular_error,
                               vector_to_angles)
from icezoo.core.components import (KINDS, PROPERTIES, Backbone, Component, Config, Embedder, FeatureExtractor,
                                    Head, Loss, ModuleComponent, Pooler, Selection)
from icezoo.core.errors import IcezooError
from icezoo.core.hookspecs import hookimpl

__all__ = [
    "Batch", "PulseChunk", "PAD_SENSOR", "N_SENSORS", "angles_to_vector", "vector_to_angles", "angular_error",
    "KINDS", "PROPERTIES", "Component", "ModuleComponent", "Config", "Selection", "FeatureExtractor",
    "Embedder", "Backbone", "Pooler", "Head", "Loss", "IcezooError", "hookimpl",
]
