import pytest

from segflow.tasks.ingest.split import assign_splits, complete_split

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


def test_the_source_split_is_kept_and_the_open_samples_follow_the_fractions():
    s = strata(20, 20)
    given = {"f0": "test", "f1": "val", "b0": "train", "b1": "train"}
    split = complete_split(s, given=given, fractions=FRACTIONS, seed=0)
    assert sorted(sum(split.values(), [])) == sorted(s)
    assert "f0" in split["test"] and "f1" in split["val"]
    assert {"b0", "b1"} <= set(split["train"])  # the source gives val: nothing drawn
    open_split = assign_splits(
        {k: v for k, v in s.items() if k not in given}, fractions=FRACTIONS, seed=0
    )
    for name, ids in open_split.items():
        assert set(ids) <= set(split[name])


def test_val_is_drawn_from_train_when_the_source_gives_none():
    s = strata(30, 30)
    given = {i: ("test" if i.endswith("9") else "train") for i in s}
    split = complete_split(s, given=given, fractions=FRACTIONS, seed=5)
    train = [i for i, name in given.items() if name == "train"]
    assert split["test"] == sorted(i for i in s if i.endswith("9"))
    assert set(split["val"]) <= set(train)
    assert abs(len(split["val"]) - FRACTIONS["val"] * len(train)) < 1.5
    assert any(s[i] == 1 for i in split["val"]) and any(s[i] == 0 for i in split["val"])
    assert split == complete_split(s, given=given, fractions=FRACTIONS, seed=5)
    assert split != complete_split(s, given=given, fractions=FRACTIONS, seed=6)


def test_drawn_and_open_samples_keep_their_previous_split():
    given = {f"f{i}": "train" for i in range(10)}
    before = complete_split(strata(10, 10), given=given, fractions=FRACTIONS, seed=1)
    more = strata(16, 14)
    after = complete_split(
        more, given=given | {"f15": "train"}, fractions=FRACTIONS, seed=1, previous=before
    )
    for name, ids in before.items():
        assert set(ids) <= set(after[name]), name
