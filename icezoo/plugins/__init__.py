"""icezoo's built-in components, one module per family, registered through the same hooks
(``icezoo_components`` / ``icezoo_pipeline_files``) that a third-party package uses."""

#: modules registered before any entry point (order fixes the order of "provided twice" errors)
DEFAULT_PLUGINS = (
    "icezoo.plugins.selection",
    "icezoo.plugins.features",
    "icezoo.plugins.embedders",
    "icezoo.plugins.backbones",
    "icezoo.plugins.poolers",
    "icezoo.plugins.heads",
    "icezoo.plugins.losses",
    "icezoo.plugins.pipelines",
)
