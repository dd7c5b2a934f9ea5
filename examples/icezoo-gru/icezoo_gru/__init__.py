"""An example third-party icezoo plugin package (see plugin.py)."""
