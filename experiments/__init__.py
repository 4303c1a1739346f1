"""Experiment configs: one file per method (ml_collections), built from ``base`` and ``presets``."""
