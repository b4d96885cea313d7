"""Seeded, stratified train/val/test split that keeps earlier assignments."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from segflow.tasks.storage.dataset import SPLITS


def _order_key(seed: int, sample_id: str) -> str:
    # A hash, not a shuffled list, so adding samples never reorders the existing ones.
    return hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()


def assign_splits(
    strata: Mapping[str, int],
    *,
    fractions: Mapping[str, float],
    seed: int,
    previous: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """Assign samples to train/val/test, stratified so every split gets each stratum.

    Samples are taken stratum by stratum, rarest first, each going to the split furthest below
    its target share of all samples seen so far; within a foreground stratum (> 0) large enough,
    every split first gets one sample, so every split sees each rare class.

    Parameters
    ----------
    strata
        Sample id -> stratum: 0 for background only, larger for rarer classes present.
    fractions
        Target share per split name in ``SPLITS``; they must sum to 1.
    seed
        Orders samples within a stratum; the same ids and seed give the same split.
    previous
        An earlier split: its samples keep their split, new samples fill the deficits.

    Returns
    -------
    dict
        Split name -> sorted sample ids, for all names in ``SPLITS``.
    """
    if abs(sum(fractions.values()) - 1.0) > 1e-9 or set(fractions) - set(SPLITS):
        raise ValueError(f"fractions must be over {SPLITS} and sum to 1, got {dict(fractions)}")
    assigned = {
        sample_id: name
        for name, ids in (previous or {}).items()
        for sample_id in ids
        if sample_id in strata
    }
    # Smallest splits first, so they get their one sample of each rare stratum.
    active = sorted((n for n in SPLITS if fractions.get(n, 0) > 0), key=lambda n: fractions[n])
    totals = {n: sum(k == n for k in assigned.values()) for n in active}
    for stratum in sorted(set(strata.values()), reverse=True):
        members = [s for s, k in strata.items() if k == stratum]
        have = {n: sum(assigned.get(s) == n for s in members) for n in active}
        pending = sorted(
            (s for s in members if s not in assigned), key=lambda s: _order_key(seed, s)
        )
        for sample_id in pending:
            seen = sum(totals.values()) + 1
            missing = [n for n in active if have[n] == 0]
            if stratum > 0 and missing and len(members) >= len(active):
                name = missing[0]
            else:
                name = max(active, key=lambda n: fractions[n] * seen - totals[n])
            assigned[sample_id] = name
            have[name] += 1
            totals[name] += 1
    return {n: sorted(s for s, k in assigned.items() if k == n) for n in SPLITS}
