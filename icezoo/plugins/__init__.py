"""icezoo's built-in components, one module per family (``backbones/`` and ``embedders/`` are packages
of family modules), registered the way a third-party package's are: each module listed here is a
plugin whose component classes are registered by being defined in it; ``pipelines.py`` adds the
pipeline and study files through ``icezoo_pipeline_files`` / ``icezoo_study_files``, ``formats.py`` the
data formats through ``icezoo_formats``."""

#: modules registered before any entry point (order fixes the order of "provided twice" errors)
DEFAULT_PLUGINS = (
    "icezoo.plugins.selection",
    "icezoo.plugins.features",
    "icezoo.plugins.embedders.linear",
    "icezoo.plugins.embedders.sensor",
    "icezoo.plugins.embedders.fourier",
    "icezoo.plugins.embedders.graphnet",
    "icezoo.plugins.embedders.aggregate",
    "icezoo.plugins.backbones.transformer",
    "icezoo.plugins.backbones.relbias",
    "icezoo.plugins.backbones.mat",
    "icezoo.plugins.backbones.local_attention",
    "icezoo.plugins.backbones.dynedge",
    "icezoo.plugins.backbones.egnn",
    "icezoo.plugins.backbones.pyg",
    "icezoo.plugins.backbones.iseecube",
    "icezoo.plugins.poolers",
    "icezoo.plugins.heads",
    "icezoo.plugins.losses",
    "icezoo.plugins.tasks",
    "icezoo.plugins.pretrain",
    "icezoo.plugins.pipelines",
    "icezoo.plugins.formats",
)
