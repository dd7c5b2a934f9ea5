"""icezoo's built-in components, one module per family (``backbones/`` and ``embedders/`` are packages
of family modules), registered through the same hooks (``icezoo_components`` /
``icezoo_pipeline_files``) that a third-party package uses."""

#: modules registered before any entry point (order fixes the order of "provided twice" errors)
DEFAULT_PLUGINS = (
    "icezoo.plugins.selection",
    "icezoo.plugins.features",
    "icezoo.plugins.embedders.linear",
    "icezoo.plugins.embedders.sensor",
    "icezoo.plugins.embedders.fourier",
    "icezoo.plugins.embedders.graphnet",
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
    "icezoo.plugins.pipelines",
    "icezoo.plugins.formats",
)
