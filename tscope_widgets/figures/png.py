"""Palette images for the static pictures: colour indices, palettes, PNG encoding and ``data:`` URIs.

A heatmap's cells are drawn as a PNG with one pixel per cell, palette-indexed (colour type 3, 8 bits):
:func:`color_indices` maps values to palette indices by the live view's rule (``colorIndexer`` in
``js/src/lib/scales.js``), :func:`palette_of` gives a colour scale's ``[256, 3]`` palette (:data:`LEVELS`
colour-map entries, then NaN, then "below the scale"), :func:`encode_png` writes the file with ``zlib`` and
:func:`png_data_uri` embeds it. No drawing here: :mod:`.svg` places the images.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from functools import lru_cache

import numpy as np

from .charts import BACKGROUND, NAN_COLOR, ColorScale, palette_colors

__all__ = [
    "LEVELS",
    "NAN_INDEX",
    "NONPOSITIVE_INDEX",
    "PALETTE",
    "color_indices",
    "encode_png",
    "palette_of",
    "png_data_uri",
]

LEVELS = 254  # colour-map entries; the palette's last two entries mark NaN and "below the scale" (<= 0 on log)
NAN_INDEX = LEVELS
NONPOSITIVE_INDEX = LEVELS + 1


def _rgb(color: str) -> list[int]:
    return [int(color[k : k + 2], 16) for k in (1, 3, 5)]


@lru_cache(maxsize=16)
def _palette(colormap: str | tuple[str, ...], nan_color: str, low_color: str | None) -> np.ndarray:
    colors = np.array([_rgb(c) for c in palette_colors(colormap)], dtype=np.uint8)
    levels = colors[np.round(np.linspace(0, len(colors) - 1, LEVELS)).astype(int)]
    low = _rgb(low_color) if low_color is not None else levels[0]
    out = np.concatenate([levels, [_rgb(nan_color), low]]).astype(np.uint8)
    out.setflags(write=False)
    return out


def palette_of(scale: ColorScale) -> np.ndarray:
    """``[256, 3]`` uint8 RGB: :data:`LEVELS` entries of the colour map, then NaN, then "below the scale"."""
    return _palette(scale.colormap, scale.nan_color, scale.low_color)


PALETTE = _palette("viridis", NAN_COLOR, BACKGROUND)  # [256, 3]: the default (viridis, log) palette


def encode_png(indices: np.ndarray, palette: np.ndarray) -> bytes:
    """Encode a palette image as PNG (colour type 3, 8 bits per pixel, no interlace).

    Args:
        indices: ``[H, W]`` uint8 palette indices (``H, W >= 1``), row 0 at the top.
        palette: ``[N, 3]`` uint8 RGB entries, ``1 <= N <= 256``; every index must be ``< N``.

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: For wrong shapes or dtypes, an empty image or an index outside the palette.
    """
    if indices.ndim != 2 or indices.dtype != np.uint8 or 0 in indices.shape:
        raise ValueError(f"indices must be a non-empty [H, W] uint8 array, got {indices.dtype} {indices.shape}")
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.dtype != np.uint8 or not 1 <= len(palette) <= 256:
        raise ValueError(f"palette must be [N, 3] uint8 with 1 <= N <= 256, got {palette.dtype} {palette.shape}")
    if int(indices.max()) >= len(palette):
        raise ValueError(f"index {int(indices.max())} is outside the {len(palette)}-entry palette")

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    height, width = indices.shape
    scanlines = np.zeros((height, width + 1), dtype=np.uint8)  # filter byte 0 ("None") per row
    scanlines[:, 1:] = indices
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)),
            chunk(b"PLTE", np.ascontiguousarray(palette).tobytes()),
            chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)),
            chunk(b"IEND", b""),
        ]
    )


def color_indices(values: np.ndarray, domain: tuple[float, float], log: bool = False) -> np.ndarray:
    """Palette indices of ``values``: ``floor((v - lo) / (hi - lo) * LEVELS)`` clipped to the colour
    map (in ``log v`` for ``log``), :data:`NAN_INDEX` for NaN, :data:`NONPOSITIVE_INDEX` for ``v <= 0``
    on a log scale (``colorIndexer`` in ``js/src/lib/scales.js``).

    Args:
        values: Float array of any shape.
        domain: ``(lo, hi)`` with ``lo < hi`` (both > 0 for ``log``).
        log: Logarithmic scale.

    Returns:
        uint8 array of the same shape.
    """
    lo, hi = domain
    if not hi > lo or (log and not lo > 0):
        raise ValueError(f"bad colour domain {domain}")
    x = np.asarray(values, dtype=np.float64)
    nan = np.isnan(x)
    nonpositive = log & ~nan & (x <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (np.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo)) if log else (x - lo) / (hi - lo)
    k = np.clip(np.floor(np.nan_to_num(t, nan=0.0, posinf=1.0, neginf=0.0) * LEVELS), 0, LEVELS - 1)
    out = k.astype(np.uint8)
    out[nan] = NAN_INDEX
    out[nonpositive] = NONPOSITIVE_INDEX
    return out


def png_data_uri(indices: np.ndarray, palette: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of the palette image ``indices`` (see :func:`encode_png`)."""
    return "data:image/png;base64," + base64.b64encode(encode_png(indices, palette)).decode("ascii")
