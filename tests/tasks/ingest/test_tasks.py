"""The ingest stage's Prefect wrappers: named like the functions they wrap, Prefect names kept."""

from __future__ import annotations

import pytest

from segflow.tasks.ingest import index, pairs, source_split, tasks, writing


@pytest.mark.parametrize(
    ("wrapper", "plain", "prefect_name", "retries"),
    [
        (tasks.prepare_store, writing.prepare_store, "prepare-store", 2),
        (tasks.find_pairs, pairs.find_pairs, "discover-pairs", 0),
        (tasks.source_split, source_split.source_split, "read-source-split", 0),
        (tasks.write_samples, writing.write_samples, "write-samples", 0),
        (tasks.build_index, index.build_index, "index-store", 2),
    ],
)
def test_wrapper_names(wrapper, plain, prefect_name, retries):
    assert wrapper.fn.__name__ == plain.__name__
    assert wrapper.name == prefect_name
    assert wrapper.retries == retries
