"""Evaluation stage: streamed exact counts, scores, reports."""
