"""From background and painted objects to pixels: compose a float window, then quantise it."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from segflow.tasks.demo.look import Look
from segflow.tasks.demo.texture import Grids, illumination, texture


def compose(
    look: Look,
    grids: Grids,
    full: tuple[int, int],
    signal: np.ndarray,
    rng: np.random.Generator,
    r0: int,
    c0: int,
) -> np.ndarray:
    """Float image of a window at global origin ``(r0, c0)`` of a `full`-sized image.

    `signal` is the ``(h, w, C)`` float32 object intensity painted into the window; the result
    is ``(h, w, C)`` float32, roughly in [0, 1], with C the colour channels.
    """
    h, w, _ = signal.shape
    background = (
        look.bg_level
        + look.texture_amp * texture(grids, r0, c0, h, w)
        + illumination(look, full, r0, c0, h, w)
    )
    # Partial-volume blur softens edges; fine texture makes objects non-uniform inside.
    signal = ndimage.gaussian_filter(signal, sigma=(0.8, 0.8, 0), mode="nearest")
    inner = ndimage.gaussian_filter(rng.standard_normal((h, w), dtype=np.float32), 1.5)
    signal *= (1 + 1.2 * inner)[..., None]
    image = background[..., None] * look.bg_colour + signal
    sigma = look.noise_sigma + look.shot_noise * np.sqrt(np.clip(image, 0, None))
    image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return image


def to_dtype(image: np.ndarray, look: Look, channels: int, dtype: str) -> np.ndarray:
    """Quantise a float ``(h, w, C)`` window to `dtype`, adding an opaque alpha for RGBA.

    Returns ``(h, w)`` when `channels` is 1, else ``(h, w, channels)``.
    """
    scaled = look.black + np.clip(image, 0, 1) * (look.white - look.black)
    out = np.rint(scaled).astype(dtype)
    if channels == 4:
        alpha = np.full(out.shape[:2] + (1,), np.iinfo(out.dtype).max, dtype=out.dtype)
        out = np.concatenate([out, alpha], axis=-1)
    return out[..., 0] if channels == 1 else out
