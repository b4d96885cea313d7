"""Demo tooling: synthetic image/mask datasets (not part of the pipeline's stages)."""
