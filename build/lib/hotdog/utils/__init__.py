"""Helpers shared by the entry points: Hydra instantiation, run records, logging setup."""

from hotdog.utils.instantiate import instantiate_callbacks, instantiate_loggers
from hotdog.utils.run_info import git_revision, run_info, save_run_files

__all__ = [
    "git_revision",
    "instantiate_callbacks",
    "instantiate_loggers",
    "run_info",
    "save_run_files",
]
