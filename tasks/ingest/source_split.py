"""The split a source gives its samples: its split folders and a split file (JSON or CSV)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from segflow.tasks.ingest.pairs import Pair
from segflow.tasks.storage import files
from segflow.tasks.storage.dataset import SPLITS

_CHOICES = ", ".join(SPLITS)
_SHOWN_IDS = 5  # unknown ids listed in an error line; the rest are counted


@dataclass(frozen=True)
class SourceSplit:
    """Sample id -> split name as the source gives it, and where it came from.

    `origin` is ``"fractions"`` (the source gives no split), ``"folders"``, ``"file:<path>"``
    or ``"folders+file:<path>"``; the store records it as ``split_source``.
    """

    assigned: dict[str, str] = field(default_factory=dict)
    origin: str = "fractions"


def _add(assigned: dict[str, str], sample_id: object, split: object, where: str) -> None:
    """Record `sample_id` -> `split` from `where` (the file, or a line of it), once."""
    if not isinstance(sample_id, str) or not sample_id:
        raise ValueError(f"{where}: a sample id must be a non-empty string, got {sample_id!r}")
    if split not in SPLITS:
        raise ValueError(f"{where}: unknown split {split!r} for id {sample_id} (use {_CHOICES})")
    earlier = assigned.setdefault(sample_id, split)
    if earlier != split:
        raise ValueError(f"{where}: id {sample_id} in both {earlier} and {split}")


def _from_json(text: str, path: str) -> dict[str, str]:
    """``{"train": [ids], ...}`` or ``{id: split, ...}``."""
    try:
        # Objects as tuples of (key, value): a key given twice is seen twice, not overwritten.
        entries = json.loads(text, object_pairs_hook=tuple)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    values = [value for _, value in entries] if isinstance(entries, tuple) else None
    assigned: dict[str, str] = {}
    if values is not None and all(isinstance(v, str) for v in values):
        for sample_id, split in entries:
            _add(assigned, sample_id, split, path)
    elif values is not None and all(isinstance(v, list) for v in values):
        for split, ids in entries:
            if split not in SPLITS:
                raise ValueError(f"{path}: unknown split {split!r} (use {_CHOICES})")
            for sample_id in ids:
                _add(assigned, sample_id, split, path)
    else:
        raise ValueError(
            f"{path}: expected a JSON object of lists of ids by split "
            '({"train": ["a"], "val": [...]}) or of splits by id ({"a": "train"})'
        )
    return assigned


def _from_csv(text: str, path: str) -> dict[str, str]:
    """Rows ``id,split`` after an optional header ``id,split``; blank lines skipped."""
    assigned: dict[str, str] = {}
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise ValueError(f"{path}: not valid CSV ({exc})") from None
    for number, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or (number == 1 and [c.lower() for c in cells] == ["id", "split"]):
            continue
        if len(cells) != 2:
            raise ValueError(f"{path}: line {number}: expected 2 columns id,split, got {row}")
        _add(assigned, cells[0], cells[1], f"{path}: line {number}")
    return assigned


def read_split_file(path: str | Path) -> dict[str, str]:
    """Sample id -> split name from a ``.json`` or ``.csv`` split file (a path or a URL).

    JSON holds ``{"train": [ids], "val": [ids], "test": [ids]}`` (any of the three) or
    ``{id: split}``; CSV holds rows ``id,split`` with an optional header ``id,split``.

    Raises
    ------
    ValueError
        One line naming `path`: unreadable, of another format, malformed, a split not in
        ``SPLITS``, or an id given two splits.
    """
    readers = {".json": _from_json, ".csv": _from_csv}
    where = files.location(path)
    suffix = files.suffix_of(where)
    reader = readers.get(suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: a split file is .json or .csv, not {suffix!r}")
    try:
        text = files.read_text(where, encoding="utf-8-sig")  # -sig: spreadsheets write a BOM
    except OSError as exc:
        # fsspec's FileNotFoundError carries the key, not strerror
        problem = exc.strerror or ("No such file" if isinstance(exc, FileNotFoundError) else exc)
        raise ValueError(f"{path}: cannot read the split file ({problem})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    return reader(text, str(path))


def _listed(ids: Iterable[str]) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 7 more``."""
    ids = sorted(ids)
    more = f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else ""
    return ", ".join(ids[:_SHOWN_IDS]) + more


def source_split(source: str, pairs: Sequence[Pair], split_file: str | None) -> SourceSplit:
    """The split `source` gives its `pairs`: their split folders, overridden by `split_file`
    for the ids it names.

    Raises
    ------
    ValueError
        The split file is bad (:func:`read_split_file`) or names ids that are not among the
        pairs of `source`.
    """
    assigned = {p.sample_id: p.split for p in pairs if p.split is not None}
    origins = ["folders"] if assigned else []
    if split_file is not None:
        listed = read_split_file(split_file)
        if unknown := listed.keys() - {p.sample_id for p in pairs}:
            raise ValueError(
                f"{split_file}: unknown sample ids {_listed(unknown)} "
                f"(not among the image/mask pairs in {source})"
            )
        assigned |= listed
        origins.append(f"file:{files.resolved(files.location(split_file))}")
    return SourceSplit(assigned, "+".join(origins) or "fractions")
