import resource

import numpy as np
import pytest

from tasks.allocator import retain_freed_memory


def test_large_blocks_stay_mapped_after_free():
    if not retain_freed_memory():
        pytest.skip("not glibc: the allocator is left as it is")
    size = 2**26  # 64 MiB: above glibc's largest mmap threshold

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    np.ones(size, np.uint8).sum()  # first use maps the pages
    before = faults()
    for _ in range(3):
        np.ones(size, np.uint8).sum()
    # without retention each array would fault in all its 16384 pages again
    assert faults() - before < size // 4096 // 2
