import pytest

from segflow.tasks.ingest.pairs import PairLayout, find_pairs
from tests.images import make_source

LAYOUT = PairLayout(images_dir="images", masks_dir="masks", mask_suffix="")


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def reasons(rejected):
    return {"/".join(r.path.split("/")[-2:]): r.reason for r in rejected}


def test_pairs_match_by_stem_across_extensions(tmp_path):
    touch(tmp_path / "images/a.jpg")
    touch(tmp_path / "masks/a.png")
    touch(tmp_path / "images/b.tif")
    touch(tmp_path / "masks/b.tiff")
    pairs, rejected = find_pairs(tmp_path, LAYOUT)
    assert [(p.sample_id, p.image.name, p.mask.name) for p in pairs] == [
        ("a", "a.jpg", "a.png"),
        ("b", "b.tif", "b.tiff"),
    ]
    assert rejected == []


def test_mask_suffix_and_custom_folders(tmp_path):
    touch(tmp_path / "img/a.png")
    touch(tmp_path / "gt/a_mask.png")
    touch(tmp_path / "gt/stray.png")
    pairs, rejected = find_pairs(
        tmp_path, PairLayout(images_dir="img", masks_dir="gt", mask_suffix="_mask")
    )
    assert [p.sample_id for p in pairs] == ["a"]
    assert "lacks the suffix '_mask'" in reasons(rejected)["gt/stray.png"]


def test_unpaired_ambiguous_and_non_image_files_are_rejected(tmp_path):
    touch(tmp_path / "images/only_image.png")
    touch(tmp_path / "masks/only_mask.png")
    touch(tmp_path / "images/twice.png")
    touch(tmp_path / "images/twice.jpg")
    touch(tmp_path / "masks/twice.png")
    touch(tmp_path / "images/readme.txt")
    touch(tmp_path / "images/.DS_Store")
    pairs, rejected = find_pairs(tmp_path, LAYOUT)
    assert pairs == []
    why = reasons(rejected)
    assert why["images/only_image.png"] == "image without mask"
    assert why["masks/only_mask.png"] == "mask without image"
    assert why["images/twice.png"].startswith("ambiguous")
    assert why["images/twice.jpg"].startswith("ambiguous")
    assert why["masks/twice.png"] == "mask without image"
    assert why["images/readme.txt"].startswith("not an image file")
    assert "images/.DS_Store" not in why


def test_missing_folder_names_the_path(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="has no masks/ folder"):
        find_pairs(tmp_path, LAYOUT)


def test_hidden_images_are_rejected_and_os_files_skipped(tmp_path):
    """An image hidden by its name is listed, not lost unseen; .DS_Store and the like are not
    images and stay out of the list."""
    for name in ("a.png", ".x.png", "..png", "._a.png", ".hidden.TIF"):
        touch(tmp_path / "images" / name)
    for name in ("a.png", ".x.png", ".DS_Store", ".gitkeep"):
        touch(tmp_path / "masks" / name)
    pairs, rejected = find_pairs(tmp_path, LAYOUT)
    assert [p.sample_id for p in pairs] == ["a"]
    why = reasons(rejected)
    hidden = ["images/..png", "images/._a.png", "images/.hidden.TIF", "images/.x.png"]
    assert sorted(why) == sorted(hidden + ["masks/.x.png"])
    assert all(reason.startswith("hidden file") for reason in why.values())


def test_names_segflow_stores_keep_for_themselves_are_rejected(tmp_path):
    """`model` (a prediction store's bundle) and `zarr.json` (Zarr's metadata) cannot name a
    sample: the image and its mask are both rejected, saying why."""
    for stem in ("model", "zarr.json", "__x", "ok"):
        touch(tmp_path / "images" / f"{stem}.png")
        touch(tmp_path / "masks" / f"{stem}.png")
    pairs, rejected = find_pairs(tmp_path, LAYOUT)
    assert [p.sample_id for p in pairs] == ["ok"]
    why = reasons(rejected)
    for folder in ("images", "masks"):
        assert "'model' is reserved" in why[f"{folder}/model.png"]
        assert "'zarr.json' is reserved" in why[f"{folder}/zarr.json.png"]
        assert "Zarr reserves" in why[f"{folder}/__x.png"]


def test_split_folders_give_each_pair_its_split(tmp_path):
    for split, stem in (("train", "a"), ("train", "b"), ("val", "c"), ("test", "d")):
        touch(tmp_path / split / "images" / f"{stem}.png")
        touch(tmp_path / split / "masks" / f"{stem}.png")
    touch(tmp_path / "val" / "images" / "lonely.png")
    pairs, rejected = find_pairs(tmp_path, LAYOUT)
    assert [(p.sample_id, p.split) for p in pairs] == [
        ("a", "train"),
        ("b", "train"),
        ("c", "val"),
        ("d", "test"),
    ]
    assert pairs[2].image == (tmp_path / "val" / "images" / "c.png").resolve()
    assert reasons(rejected) == {"images/lonely.png": "image without mask"}
    plain, _ = find_pairs(make_source(tmp_path / "plain", n=2), LAYOUT)
    assert [p.split for p in plain] == [None, None]


def test_a_sample_id_in_two_split_folders_names_both_files(tmp_path):
    for split in ("train", "test"):
        touch(tmp_path / split / "images" / "a.png")
        touch(tmp_path / split / "masks" / "a.png")
    with pytest.raises(ValueError, match="'a' is in two split folders") as info:
        find_pairs(tmp_path, LAYOUT)
    assert "train/images/a.png and " in str(info.value)
    assert "test/images/a.png (rename one" in str(info.value)


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        (["images", "masks", "train/images", "train/masks"], "holds both images/ and train/"),
        (["val/images", "val/masks"], "has val/ but no train/ folder"),
        (["train/images", "train/masks", "test/images"], "has no test/masks/ folder"),
    ],
)
def test_a_source_of_no_known_layout_is_refused(tmp_path, folders, message):
    for folder in folders:
        (tmp_path / folder).mkdir(parents=True)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        find_pairs(tmp_path, LAYOUT)
