"""Hydra configs, installed with the package as `hotdog.configs` (see pyproject.toml)."""
