"""Classical reconstructions (no learning): LineFit baselines used by the CLI and evaluation tables."""

from icezoo.recon.linefit import linefit, linefit_improved

__all__ = ["linefit", "linefit_improved"]
