"""Ingest stage: find image/mask pairs, validate, convert masks, split, write samples."""
