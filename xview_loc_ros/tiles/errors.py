# SPDX-License-Identifier: Apache-2.0
"""Typed tile errors: every failure to deliver a tile is one of these, never a black square."""

from __future__ import annotations


class TileError(OSError):
    """Base class: a tile could not be delivered (the message names the tile and the source)."""


class TileNotFound(TileError):
    """The source has no tile at (z, x, y): outside its coverage, or not in the archive."""


class TileDecodeError(TileError):
    """Tile bytes are not a complete 256x256 PNG/JPEG/WebP image (corrupt, truncated, wrong kind, a header
    declaring another size), or the archive holding them is damaged."""


class TileFetchError(TileError):
    """A network fetch failed after its retries (timeouts, 5xx, oversized or wrong content type)."""
