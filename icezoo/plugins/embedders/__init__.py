"""Embedders, one module per family: per-pulse features [B, L, F] -> [B, L, D].

Every embedder here works pulse by pulse, so all declare ``permutation_invariant`` (per-pulse outputs
permute with the input) and padding cannot reach a real pulse. Padded inputs are zeroed first, so
whatever a batch holds in its padded slots (NaN included) never reaches an output or a gradient.
Each family module registers its own components and is listed in :data:`icezoo.plugins.DEFAULT_PLUGINS`.
"""
