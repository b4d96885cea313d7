import pytest

from segflow.tasks.ingest.split import assign_splits

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def strata(n_fg: int, n_bg: int) -> dict[str, int]:
    return {**{f"f{i}": 1 for i in range(n_fg)}, **{f"b{i}": 0 for i in range(n_bg)}}


def test_same_seed_same_split_other_seed_differs():
    s = strata(30, 20)
    first = assign_splits(s, fractions=FRACTIONS, seed=3)
    assert first == assign_splits(dict(reversed(list(s.items()))), fractions=FRACTIONS, seed=3)
    assert first != assign_splits(s, fractions=FRACTIONS, seed=4)


@pytest.mark.parametrize(("n_fg", "n_bg"), [(3, 0), (3, 40), (10, 10), (57, 3)])
def test_every_split_gets_foreground_and_sizes_follow_fractions(n_fg, n_bg):
    s = strata(n_fg, n_bg)
    split = assign_splits(s, fractions=FRACTIONS, seed=0)
    assert sorted(sum(split.values(), [])) == sorted(s)
    for name, ids in split.items():
        assert any(s[i] == 1 for i in ids), name
        assert abs(len(ids) - FRACTIONS[name] * len(s)) < 1.5


def test_rare_class_stratum_reaches_every_split():
    s = {**strata(20, 20), "r0": 2, "r1": 2, "r2": 2}
    split = assign_splits(s, fractions=FRACTIONS, seed=0)
    assert all(any(i.startswith("r") for i in ids) for ids in split.values())


def test_previous_assignment_is_kept_when_samples_are_added():
    before = assign_splits(strata(10, 10), fractions=FRACTIONS, seed=1)
    after = assign_splits(strata(14, 12), fractions=FRACTIONS, seed=1, previous=before)
    for name, ids in before.items():
        assert set(ids) <= set(after[name])


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(strata(2, 2), fractions={"train": 0.9, "val": 0.2}, seed=0)
