"""Convolution blocks of the decoders, the EnMAP merge and the heads."""

from __future__ import annotations

from torch import nn


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3×3 convolution, stride 1, 'same' padding, with bias."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


class ConvBNReLUConv(nn.Sequential):
    """conv3×3 -> BatchNorm -> ReLU -> conv3×3: the refinement block used throughout the research model.

    Args:
        in_channels: input channels.
        mid_channels: channels after the first convolution.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__(
            conv3x3(in_channels, mid_channels),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            conv3x3(mid_channels, out_channels),
        )
