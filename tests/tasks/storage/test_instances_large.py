"""Instance labelling of a large mask stays within a few blocks of memory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr

from segflow.tasks.storage.grid import blocks
from segflow.tasks.storage.predictions import create_image_arrays

# Run in a fresh process: its peak RSS (ru_maxrss) minus its RSS after the imports.
LABEL = """
import json, resource, sys
from segflow.tasks.storage.predictions import write_instances
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
objects = write_instances(sys.argv[1], "x", min_size=20, block=1024)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"objects": objects, "mib": (peak - base) / 1024}))
"""


@pytest.mark.slow
def test_an_8192_mask_is_labelled_in_a_few_blocks_of_memory(tmp_path):
    size, block = 8192, 1024
    out = tmp_path / "out.zarr"
    create_image_arrays(
        out,
        "x",
        shape=(size, size),
        class_names=("background", "a"),
        classes=1,
        block=block,
        probability_dtype="uint8",
        attrs={},
    )
    mask = zarr.open_array(out / "x/labels/mask/0", mode="r+")
    for index, (y0, y1, x0, x1) in enumerate(blocks((size, size), block)):
        cells = np.random.default_rng(index).random(((y1 - y0) // 8, (x1 - x0) // 8)) < 0.4
        mask[0, y0:y1, x0:x1] = np.repeat(np.repeat(cells, 8, axis=0), 8, axis=1)
    run = subprocess.run(
        [sys.executable, "-c", LABEL, str(out)], capture_output=True, text=True, check=True
    )
    result = json.loads(run.stdout)
    # In memory at once, the mask (1 B/px), its foreground (1 B) and labels (8 B): 640 MiB.
    assert result["mib"] < 160, result
    assert result["objects"] > 1000
    instances = zarr.open_array(out / "x/labels/instances/0", mode="r")
    assert instances[0, 1000:1100, 1000:1100].any()
