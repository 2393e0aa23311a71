"""The DVC pipeline's stages that are not training or evaluation: data preparation."""
