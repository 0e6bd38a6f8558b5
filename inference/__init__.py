"""Inference: model packages (``manifest``: what a model is; ``package``: its files, verified before use)."""
