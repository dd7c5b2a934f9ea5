"""Attention backbones, one module per family: [B, L, D] -> [B, L, D'] (or [B, L+1, D'] with a CLS token in slot 0).

Padded slots are zeroed on entry and are never keys, so nothing in them reaches a real pulse.
None of these backbones uses a slot index (except ``transformer`` with rotary embeddings), so they
declare ``permutation_invariant``: per-pulse outputs permute with the input. Each family module
registers its own components and is listed in :data:`icezoo.plugins.DEFAULT_PLUGINS`; a new
family is a new module here plus one line there.
"""
