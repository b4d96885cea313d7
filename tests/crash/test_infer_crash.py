"""``segflow infer`` on Dask workers, killed with SIGKILL at seeded moments, then re-run: the
prediction store equals that of an undisturbed run."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.tasks.storage import urls
from tests.crash.commands import kill_when, left_running, run, start
from tests.images import save, tiny_bundle

# The real command, run several times (~20 s each here): `.ci/run` runs these tests.
pytestmark = pytest.mark.slow


def _bundle(folder):
    return tiny_bundle(folder, seed=0, head_scale=20.0)


def all_arrays(store) -> dict[str, np.ndarray]:
    """Every array of the Zarr store at `store` (a path or URL), by its path in the store."""
    found, groups = {}, [("", urls.open_group(store))]
    while groups:
        prefix, group = groups.pop()
        for name, array in group.arrays():
            found[prefix + name] = array[...]
        groups += [(f"{prefix}{name}/", sub) for name, sub in group.groups()]
    return found


def kill_and_rerun(tmp_path, home, seed: int, kills: int) -> None:
    rng = np.random.default_rng(seed)
    images = tmp_path / "in"
    for i in range(3):
        save(images / f"im{i}.png", rng.integers(0, 255, (700, 600), dtype=np.uint8))
    bundle = _bundle(tmp_path / "bundle")
    common = ["--model", bundle, "--tile", "64", "--block", "256", "--workers", "2"]
    reference, out = tmp_path / "reference.zarr", tmp_path / "out.zarr"
    run(["infer", images, reference, *common], home, tmp_path / "reference.log")
    for attempt in range(kills):
        # a moment: some time after the store is created (blocks are under way then)
        delay = float(rng.uniform(0, 3))
        proc = start(["infer", images, out, *common], home, tmp_path / f"kill{attempt}.log")
        started = kill_when(proc, lambda: (out / "zarr.json").exists(), delay=delay)
        assert not left_running(started)
    run(["infer", images, out, *common], home, tmp_path / "rerun.log")
    want, got = all_arrays(reference), all_arrays(out)
    assert sorted(got) == sorted(want) and len(want) >= 6
    for path, array in want.items():
        np.testing.assert_array_equal(got[path], array, err_msg=path)


def test_killed_inference_reruns_to_the_undisturbed_output(tmp_path, home):
    kill_and_rerun(tmp_path, home, seed=1, kills=1)


@pytest.mark.parametrize("seed", [2, 3])
def test_inference_killed_again_and_again_reruns_to_the_undisturbed_output(tmp_path, home, seed):
    kill_and_rerun(tmp_path, home, seed=seed, kills=3)
