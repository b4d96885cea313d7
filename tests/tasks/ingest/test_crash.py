"""A writer killed with SIGKILL mid-ingest, then a re-run, leaves a complete, exact store."""

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from segflow.tasks.ingest.index import build_index
from segflow.tasks.ingest.masks import MaskRules
from segflow.tasks.ingest.pairs import PairLayout, find_pairs
from segflow.tasks.ingest.samples import SampleChecks, ingest_pair
from segflow.tasks.storage.dataset import open_dataset
from segflow.tasks.storage.dataset_writer import committed_samples, init_store
from segflow.tasks.storage.image_io import SizeLimits
from tests.images import save

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
BINARY = MaskRules(num_classes=2, foreground_value=None, invert=False)
UNLIMITED = SampleChecks(SizeLimits(10**9, 10**9), image_format=None)
LAYOUT = PairLayout(images_dir="images", masks_dir="masks", mask_suffix="")

INGEST_ALL = textwrap.dedent(
    """
    import sys
    from segflow.tasks.ingest.index import build_index
    from segflow.tasks.ingest.pairs import PairLayout, find_pairs
    from segflow.tasks.ingest.masks import MaskRules
    from segflow.tasks.ingest.samples import SampleChecks, ingest_pair
    from segflow.tasks.storage.dataset_writer import committed_samples, init_store
    from segflow.tasks.storage.image_io import SizeLimits

    source, store = sys.argv[1:]
    init_store(store, class_names=("background", "foreground"))
    stored = committed_samples(store)
    pairs, rejected = find_pairs(source, PairLayout("images", "masks", ""))
    rules = MaskRules(num_classes=2, foreground_value=None, invert=False)
    for pair in pairs:
        ingest_pair(pair, store, rules=rules, checks=SampleChecks(SizeLimits(10**9, 10**9), None),
                    stored=stored.get(pair.sample_id))
    build_index(store, rejected=rejected, fractions={fractions}, seed=0)
    """
).format(fractions=FRACTIONS)


def test_kill_during_ingest_then_rerun_gives_complete_store(tmp_path):
    rng = np.random.default_rng(0)
    expected = {}
    for i in range(24):
        image = rng.integers(0, 255, (700, 900, 3), dtype=np.uint8)
        mask = (rng.random((700, 900)) < 0.1).astype(np.uint8) * 255
        save(
            tmp_path / "src/images" / f"s{i:02d}.png",
            image,
        )
        save(tmp_path / "src/masks" / f"s{i:02d}.png", mask)
        expected[f"s{i:02d}"] = (np.moveaxis(image, -1, 0), mask // 255)
    store = tmp_path / "ds.zarr"
    script = tmp_path / "ingest_all.py"
    script.write_text(INGEST_ALL)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "src"), str(store)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        staged = list((store / ".staging").glob("*")) if store.exists() else []
        if len(list((store / "masks").glob("s*"))) >= 3 and staged:
            break  # killed while a sample is being written
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted = set(committed_samples(store))
    assert 0 < len(interrupted) < 24

    init_store(store, class_names=("background", "foreground"))
    stored = committed_samples(store)
    pairs, rejected = find_pairs(tmp_path / "src", LAYOUT)
    statuses = [
        ingest_pair(p, store, rules=BINARY, checks=UNLIMITED, stored=stored.get(p.sample_id)).status
        for p in pairs
    ]
    build_index(store, rejected=rejected, fractions=FRACTIONS, seed=0)
    assert statuses.count("unchanged") == len(interrupted)
    dataset = open_dataset(store)
    assert dataset.samples() == sorted(expected)
    for sample_id, (image, mask) in expected.items():
        np.testing.assert_array_equal(dataset.image(sample_id)[...], image)
        np.testing.assert_array_equal(dataset.mask(sample_id)[...], mask)
