"""Balancing weights: per-sample draw probabilities and inverse-frequency class weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def balanced_sample_weights(
    class_counts: Mapping[str, Sequence[int]], fg_classes: Sequence[int]
) -> dict[str, float]:
    """Per-sample draw probabilities: half uniform, half split over the foreground classes.

    Parameters
    ----------
    class_counts
        Sample id -> pixels per class.
    fg_classes
        Classes whose presence earns a sample extra weight.

    Returns
    -------
    dict
        Sample id -> probability; the values sum to 1.
    """
    ids = sorted(class_counts)
    if not ids:
        raise ValueError("no samples to weight")
    weights = dict.fromkeys(ids, 0.5 / len(ids))
    present = {c: [s for s in ids if class_counts[s][c] > 0] for c in fg_classes}
    present = {c: members for c, members in present.items() if members}
    if not present:
        return dict.fromkeys(ids, 1.0 / len(ids))
    for members in present.values():
        for sample_id in members:
            weights[sample_id] += 0.5 / len(present) / len(members)
    return weights


def class_weights(totals: Sequence[int], *, cap: float = 10.0) -> tuple[float, ...]:
    """Inverse-frequency class weights ``N / (K * n_c)``, clipped to ``[1/cap, cap]``.

    For a binary problem the BCE ``pos_weight`` is ``weights[1] / weights[0]`` (= n_0 / n_1,
    capped). A class with no pixels gets the cap.
    """
    counts = np.asarray(totals, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError(f"class counts must not all be zero, got {list(totals)}")
    with np.errstate(divide="ignore"):
        raw = counts.sum() / (len(counts) * counts)
    return tuple(float(w) for w in np.clip(raw, 1.0 / cap, cap))
