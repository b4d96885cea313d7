"""Seeded, stratified train/val/test split that keeps earlier assignments and the source's own."""

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


def complete_split(
    strata: Mapping[str, int],
    *,
    given: Mapping[str, str],
    fractions: Mapping[str, float],
    seed: int,
    previous: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """The split of `strata`'s samples when the source gives some of them theirs.

    Samples in `given` keep the source's split. When the source puts none in ``val``,
    ``fractions["val"]`` of those it puts in ``train`` are drawn into val (stratified and
    seeded by :func:`assign_splits`). The samples the source leaves open are assigned by
    `fractions`. Drawn and open samples keep their `previous` split.

    Parameters
    ----------
    given
        Sample id -> split name from the source (its split folders or split file).

    Returns
    -------
    dict
        Split name -> sorted sample ids, for all names in ``SPLITS``.
    """
    given = {s: name for s, name in given.items() if s in strata}
    open_strata = {s: k for s, k in strata.items() if s not in given}
    split = assign_splits(open_strata, fractions=fractions, seed=seed, previous=previous)
    for sample_id, name in given.items():
        split[name].append(sample_id)
    if given and "val" not in given.values():
        train = {s: strata[s] for s, name in given.items() if name == "train"}
        share = {"train": 1.0 - fractions["val"], "val": fractions["val"]}
        kept = {n: ids for n, ids in (previous or {}).items() if n in share}
        drawn = set(assign_splits(train, fractions=share, seed=seed, previous=kept)["val"])
        split["train"] = [s for s in split["train"] if s not in drawn]
        split["val"] += drawn
    return {name: sorted(ids) for name, ids in split.items()}
