"""The original U-Net (Ronneberger et al., 2015) with "same" convolutions, for any input size."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Largest accepted depth: 2**8 = 256 px of padding granularity is already beyond any tile we use.
_MAX_DEPTH = 8


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`UNet`; saved as a plain dict beside every checkpoint.

    Attributes
    ----------
    in_channels
        Image channels, >= 1.
    num_classes
        1 gives one logit channel (binary, sigmoid); K >= 2 gives K logits (softmax).
    depth
        Number of 2x2 max-pool downsamplings, 1 to 8 (the paper uses 4).
    base_channels
        Channels of the first level, doubled at each level (the paper uses 64).
    batch_norm
        BatchNorm after every 3x3 convolution (not in the paper, but trains faster).
    """

    in_channels: int = 1
    num_classes: int = 1
    depth: int = 4
    base_channels: int = 32
    batch_norm: bool = True

    def __post_init__(self) -> None:
        limits = {
            "in_channels": (1, None),
            "num_classes": (1, None),
            "depth": (1, _MAX_DEPTH),
            "base_channels": (1, None),
        }
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"UNetConfig.{name} must be an int, got {value!r}")
            if value < low or (high is not None and value > high):
                allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
                raise ValueError(f"UNetConfig.{name} must be {allowed}, got {value}")
        if not isinstance(self.batch_norm, bool):
            raise TypeError(f"UNetConfig.batch_norm must be a bool, got {self.batch_norm!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field, fit for JSON or a checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict`; missing keys take the defaults, unknown keys raise."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown UNetConfig keys {unknown}; allowed: {sorted(known)}")
        return cls(**d)


class DoubleConv(nn.Sequential):
    """Two 3x3 "same" convolutions, each followed by optional BatchNorm and ReLU.

    (N, in_channels, H, W) -> (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, *, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            # BatchNorm's shift makes a conv bias redundant.
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Down(nn.Sequential):
    """2x2 max-pool then :class:`DoubleConv`: (N, C_in, H, W) -> (N, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int, *, batch_norm: bool) -> None:
        super().__init__(
            nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, batch_norm=batch_norm)
        )


class Up(nn.Module):
    """2x2 transposed conv (stride 2) halving channels, concat with the skip, :class:`DoubleConv`.

    ``x`` (N, C, H, W) and ``skip`` (N, C/2, 2H, 2W) -> (N, C/2, 2H, 2W).
    """

    def __init__(self, in_channels: int, *, batch_norm: bool) -> None:
        super().__init__()
        out_channels = in_channels // 2
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """U-Net: ``depth`` :class:`Down` levels, as many :class:`Up` levels, and a 1x1 conv head.

    Inputs whose H or W is not a multiple of ``2**depth`` are zero-padded at the bottom and
    right, and the logits cropped back, so every size >= 1x1 works. Zeros, because the 3x3
    convolutions already zero-pad at every level: the network sees the same kind of border
    whether the image was padded or not, and reflection would fail on images smaller than the
    pad. Padding only bottom/right keeps the pooling grid anchored at the top-left pixel, so a
    tile at an offset that is a multiple of ``2**depth`` sees the grid the whole image sees.
    (With BatchNorm in training mode, a batch of one image no larger than ``2**depth`` in both
    H and W leaves one value per channel at the bottleneck, which BatchNorm rejects.)

    Weights use Kaiming-normal init (fan-in, ReLU gain), the paper's std ``sqrt(2 / fan_in)``;
    biases start at zero.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
        self.config = config
        bn = config.batch_norm
        widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
        self.stem = DoubleConv(config.in_channels, widths[0], batch_norm=bn)
        self.downs = nn.ModuleList(
            Down(c_in, c_out, batch_norm=bn) for c_in, c_out in itertools.pairwise(widths)
        )
        self.ups = nn.ModuleList(Up(c, batch_norm=bn) for c in reversed(widths[1:]))
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes, H, W) for images (N, in_channels, H, W) of floating dtype."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected input (N, {self.config.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point input, got {x.dtype}")
        height, width = x.shape[-2:]
        multiple = 2**self.config.depth
        x = F.pad(x, (0, -width % multiple, 0, -height % multiple))
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)[..., :height, :width]


def build_unet(
    *,
    in_channels: int = 1,
    num_classes: int = 1,
    depth: int = 4,
    base_channels: int = 32,
    batch_norm: bool = True,
) -> UNet:
    """Keyword-only builder: ``UNet(UNetConfig(...))``; see :class:`UNetConfig` for the fields."""
    return UNet(
        UNetConfig(
            in_channels=in_channels,
            num_classes=num_classes,
            depth=depth,
            base_channels=base_channels,
            batch_norm=batch_norm,
        )
    )
