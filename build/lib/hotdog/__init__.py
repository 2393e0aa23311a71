"""hotdog: an end-to-end MLOps reference project around one image classifier."""

__version__ = "0.1.0"
