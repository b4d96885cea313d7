"""The model bundle: saved and loaded intact, and its input normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segflow.models.unet import build_unet
from segflow.tasks.storage.bundle import load_bundle, save_bundle


@pytest.fixture
def bundle(tmp_path):
    torch.manual_seed(0)
    model = build_unet(in_channels=2, num_classes=1, depth=2, base_channels=4).eval()
    path = save_bundle(
        tmp_path / "bundle",
        config=model.config,
        state_dicts=[model.state_dict()],
        mean=(100.0, 20.0),
        std=(50.0, 3.0),
        class_names=("background", "fg"),
    )
    return load_bundle(path), model


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
def test_normalize_is_per_channel_mean_and_std_in_float32(bundle, dtype):
    loaded, _ = bundle
    pixels = np.random.default_rng(0).integers(0, 250, (3, 2, 5, 7)).astype(dtype)
    expected = (pixels.astype(np.float32) - np.float32([100, 20])[:, None, None]) / np.float32(
        [50, 3]
    )[:, None, None]
    out = loaded.normalize(pixels)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    tensor = torch.from_numpy(pixels.copy())
    np.testing.assert_array_equal(loaded.normalize_tensor(tensor).numpy(), expected)
    np.testing.assert_array_equal(tensor.numpy(), pixels)  # the input is left as it was


def test_normalize_accepts_read_only_and_strided_input(bundle):
    loaded, _ = bundle
    pixels = np.random.default_rng(1).integers(0, 255, (1, 2, 8, 8), dtype=np.uint8)
    view = pixels[:, :, ::2, 1:]
    view.flags.writeable = False
    np.testing.assert_array_equal(loaded.normalize(view), loaded.normalize(view.copy()))


def test_saved_bundle_predicts_as_the_model(bundle):
    loaded, model = bundle
    pixels = np.random.default_rng(2).integers(0, 255, (1, 2, 16, 16), dtype=np.uint8)
    with torch.no_grad():
        logits = model(torch.from_numpy(loaded.normalize(pixels)))
    np.testing.assert_allclose(loaded.predict(pixels), torch.sigmoid(logits).numpy(), atol=1e-6)
