"""The split a source gives: split files (JSON, CSV) and split folders (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segflow.tasks.ingest.pairs import Pair
from segflow.tasks.ingest.source_split import SourceSplit, read_split_file, source_split

EXPECTED = {"a": "train", "b": "train", "c": "val", "d": "test"}


def pairs(*ids: str, split: str | None = None) -> list[Pair]:
    return [Pair(i, Path(f"{i}.png"), Path(f"{i}.png"), split) for i in ids]


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("lists.json", json.dumps({"train": ["a", "b"], "val": ["c"], "test": ["d"]})),
        ("mapping.JSON", json.dumps(EXPECTED)),
        ("header.csv", "id,split\na,train\nb, train\n\nc,val\nd,test\n"),
        ("bare.csv", "a,train\nb,train\nc,val\nd,test"),
        ("excel.csv", "\ufeffID,Split\r\na,train\r\nb,train\r\nc,val\r\nd,test\r\n"),
    ],
)
def test_every_form_of_split_file_reads_alike(tmp_path, name, text):
    assert read_split_file(write(tmp_path / name, text)) == EXPECTED


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("twice.json", '{"train": ["a", "x"], "test": ["x"]}', "id x in both train and test"),
        ("twice_key.json", '{"x": "train", "x": "val"}', "id x in both train and val"),
        ("twice.csv", "x,train\nx,test\n", "line 2: id x in both train and test"),
        ("split.json", '{"holdout": ["a"]}', "unknown split 'holdout' (use train, val, test)"),
        ("split.csv", "id,split\na,holdout\n", "line 2: unknown split 'holdout' for id a"),
        ("broken.json", '{"train": [', "not valid JSON"),
        ("array.json", '["a", "b"]', "expected a JSON object of lists of ids by split"),
        ("mixed.json", '{"a": "train", "val": ["b"]}', "expected a JSON object"),
        ("number.json", '{"train": [1]}', "a sample id must be a non-empty string, got 1"),
        ("columns.csv", "a,train,extra\n", "line 1: expected 2 columns id,split"),
        ("split.txt", "a,train\n", "a split file is .json or .csv, not '.txt'"),
    ],
)
def test_a_bad_split_file_is_one_line_naming_it(tmp_path, name, text, message):
    path = write(tmp_path / name, text)
    with pytest.raises(ValueError, match="^" + path) as info:
        read_split_file(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_an_unreadable_split_file_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="missing.csv: cannot read the split file"):
        read_split_file(tmp_path / "missing.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00a")
    with pytest.raises(ValueError, match="binary.csv: not UTF-8 text"):
        read_split_file(tmp_path / "binary.csv")


def test_no_folders_and_no_file_leave_the_split_to_the_fractions():
    assert source_split("src", pairs("a", "b"), None) == SourceSplit({}, "fractions")


def test_split_folders_give_the_split():
    given = source_split("src", pairs("a", "b", split="train") + pairs("c", split="val"), None)
    assert given == SourceSplit({"a": "train", "b": "train", "c": "val"}, "folders")


def test_the_file_wins_over_the_folders_for_the_ids_it_names(tmp_path):
    path = write(tmp_path / "s.csv", "b,test\n")
    given = source_split("src", pairs("a", "b", split="train"), path)
    assert given.assigned == {"a": "train", "b": "test"}
    assert given.origin == f"folders+file:{(tmp_path / 's.csv').resolve()}"
    plain = source_split("src", pairs("a", "b"), path)
    assert plain == SourceSplit({"b": "test"}, f"file:{(tmp_path / 's.csv').resolve()}")


def test_ids_not_among_the_pairs_are_refused_and_listed(tmp_path):
    path = write(tmp_path / "s.json", json.dumps({"train": ["a", "zz", "yy"]}))
    with pytest.raises(ValueError) as info:
        source_split("src", pairs("a", "b"), path)
    assert str(info.value) == (
        f"{path}: unknown sample ids yy, zz (not among the image/mask pairs in src)"
    )
    many = write(tmp_path / "many.json", json.dumps({"val": [f"x{i}" for i in range(9)]}))
    with pytest.raises(ValueError, match="unknown sample ids x0, x1, x2, x3, x4 and 4 more"):
        source_split("src", pairs("a"), many)
