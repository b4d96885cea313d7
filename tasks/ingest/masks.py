"""Turn source mask values into class ids (0 = background)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segflow.tasks.storage.image_io import (
    InputError,
)


def class_lookup(
    values: np.ndarray,
    *,
    num_classes: int,
    foreground_value: int | None,
    invert: bool,
) -> np.ndarray:
    """A lookup table mapping every source value present in a mask to a class id.

    Binary masks (``num_classes == 2``) may be 0/1 or 0/255; `foreground_value` picks the
    foreground value explicitly (any other value is background) and `invert` swaps the classes.
    Multi-class masks must already hold class ids ``0..num_classes-1``.

    Parameters
    ----------
    values
        The distinct values found in the mask, any integer dtype.

    Returns
    -------
    numpy.ndarray
        ``uint8`` table of length ``values.max() + 1``; ``table[v]`` is the class of value `v`.

    Raises
    ------
    ValueError
        Values outside the declared classes; the message lists them.
    """
    values = np.unique(np.asarray(values, dtype=np.int64))
    if values.size and values[0] < 0:
        raise ValueError(f"negative mask values {values[values < 0][:5].tolist()}")
    table = np.zeros(int(values.max(initial=0)) + 1, dtype=np.uint8)
    if num_classes == 2:
        if foreground_value is not None:
            table[values[values == foreground_value]] = 1
        else:
            allowed = (0, 255) if values.max(initial=0) > 1 else (0, 1)
            bad = np.setdiff1d(values, allowed)
            if bad.size:
                raise ValueError(
                    f"mask values {bad[:8].tolist()} are neither background nor foreground "
                    f"(binary masks hold 0/1 or 0/255; set foreground_value to choose one value)"
                )
            table[values[values > 0]] = 1
        if invert:
            table[values] = 1 - table[values]
        return table
    bad = values[values >= num_classes]
    if bad.size:
        raise ValueError(
            f"mask values {bad[:8].tolist()} outside the declared classes 0..{num_classes - 1}"
        )
    table[values] = values.astype(np.uint8)
    return table


def single_channel(mask: np.ndarray) -> np.ndarray:
    """Reduce a ``(C, H, W)`` mask to ``(H, W)``; colour masks must have equal channels.

    An alpha channel (C = 2 or 4) is ignored.

    Raises
    ------
    ValueError
        If the colour channels differ (a colour-coded mask, which segflow does not decode).
    """
    colour = mask[:3] if mask.shape[0] in (3, 4) else mask[:1]
    if not (colour == colour[:1]).all():
        raise ValueError("colour mask with differing channels; store class ids in one channel")
    return colour[0]


def class_counts(ids: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class of a class-id array, shape ``(num_classes,)`` int64."""
    return np.bincount(ids.ravel(), minlength=num_classes)[:num_classes].astype(np.int64)


@dataclass(frozen=True)
class MaskRules:
    """How source mask values become class ids (built by ``IngestConfig.mask_rules``; the
    fields are the arguments of :func:`class_lookup`)."""

    num_classes: int
    foreground_value: int | None
    invert: bool

    def lookup(self, values: np.ndarray, path: str | Path) -> np.ndarray:
        """:func:`class_lookup` of `values` found in the mask file `path` (a path or a URL).

        Raises
        ------
        InputError
            Values outside the declared classes, naming `path`.
        """
        try:
            return class_lookup(
                values,
                num_classes=self.num_classes,
                foreground_value=self.foreground_value,
                invert=self.invert,
            )
        except ValueError as exc:
            raise InputError(path, str(exc)) from exc
