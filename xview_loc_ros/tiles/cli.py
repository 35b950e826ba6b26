# SPDX-License-Identifier: Apache-2.0
"""`xview-loc tiles ...`: cut a geo-referenced aerial patch; prefetch tiles into a disk cache."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Tuple

from xview_loc_ros.cli import latitude, longitude, positive_float, positive_int, zoom_level
from xview_loc_ros.fsutil import atomic_write_bytes, atomic_write_json
from xview_loc_ros.tiles.coverage import tiles_in_bbox
from xview_loc_ros.tiles.errors import TileError, TileNotFound
from xview_loc_ros.tiles.http import HTTPTileSource
from xview_loc_ros.tiles.patch import AerialPatchBuilder
from xview_loc_ros.tiles.policy import restricted_provider
from xview_loc_ros.tiles.spec import SPEC_HELP, open_tile_source


def register(sub: "argparse._SubParsersAction") -> None:
    tiles = sub.add_parser(
        "tiles",
        help="aerial tile sources: cut patches, prefetch tiles",
        description=f"Aerial tile sources. SPEC: {SPEC_HELP}.",
    )
    tsub = tiles.add_subparsers(dest="tiles_command", metavar="ACTION", required=True)

    p = tsub.add_parser(
        "patch",
        help="write a north-up aerial patch and its geo-reference",
        description="Cut a north-up SIZE x SIZE patch at exactly MPP metres per pixel centred on "
        "LAT/LON (WGS84 degrees); writes OUT (PNG) and OUT with .json (centre, m/px, size, zoom).",
    )
    p.add_argument("--source", required=True, metavar="SPEC", help=SPEC_HELP)
    p.add_argument("--lat", type=latitude, required=True, help="patch centre latitude, degrees WGS84")
    p.add_argument("--lon", type=longitude, required=True, help="patch centre longitude, degrees WGS84")
    p.add_argument("--size", type=positive_int, required=True, metavar="S", help="patch side, pixels")
    p.add_argument("--mpp", type=positive_float, required=True, metavar="R", help="ground resolution, metres per pixel")
    p.add_argument("--zoom", type=zoom_level, help="tile zoom to sample (default: coarsest zoom not coarser than R)")
    p.add_argument("--cache", metavar="DIR", help="disk cache folder for http(s) sources")
    p.add_argument(
        "--allow-missing", action="store_true", help="leave missing tiles as black holes (reported) instead of failing"
    )
    p.add_argument(
        "--out", required=True, type=Path, help="output PNG path; the geo-reference goes to the same name with .json"
    )
    p.set_defaults(func=_patch)

    f = tsub.add_parser(
        "prefetch",
        help="download the tiles of a box into a cache folder (licensed servers only)",
        description="Fetch every tile of the box S,W,N,E (degrees) at the given zoom(s) from an http(s) "
        "URL template into the XYZ cache folder DIR (usable later as xyz:DIR), obeying the server's "
        "Cache-Control/Expires. Public servers (OpenStreetMap, Esri, Google, Mapbox, Bing) "
        "forbid bulk downloading: they are refused unless --i-am-licensed.",
    )
    f.add_argument(
        "--source",
        required=True,
        metavar="URL",
        help="http(s) URL template with {z} {x} {y} (also {-y} TMS row, {q} quadkey, {s} subdomain)",
    )
    f.add_argument("--cache", required=True, metavar="DIR", help="cache folder (XYZ layout)")
    f.add_argument("--zoom", type=zoom_level, nargs="+", required=True, metavar="Z", help="zoom level(s)")
    f.add_argument("--bbox", required=True, metavar="S,W,N,E", help="box in degrees: south,west,north,east")
    f.add_argument(
        "--max-tiles", type=positive_int, default=20000, help="refuse boxes with more tiles than this (default 20000)"
    )
    f.add_argument("--workers", type=positive_int, default=4, help="concurrent requests (default 4; keep it polite)")
    f.add_argument(
        "--i-am-licensed",
        dest="licensed",
        action="store_true",
        help="state that your licence with the provider allows bulk downloading and offline storage",
    )
    f.set_defaults(func=_prefetch)


def _patch(args: argparse.Namespace) -> int:
    import cv2

    if args.out.suffix.lower() != ".png":
        raise ValueError(f"--out {args.out}: the patch is written as PNG, use a .png name")
    with open_tile_source(args.source, cache_dir=args.cache) as src:
        builder = AerialPatchBuilder(src, args.size, args.mpp, zoom=args.zoom, allow_missing=args.allow_missing)
        patch = builder.build(args.lat, args.lon)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(patch.image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {args.out}")
    atomic_write_bytes(args.out, buf.tobytes())
    meta = {
        **patch.georef.to_dict(),
        "zoom": patch.zoom,
        "missing_fraction": patch.missing_fraction,
        "source": args.source,
        "frame": "north-up; u east, v south; pixel i covers [i, i+1); centre (S/2, S/2)",
    }
    atomic_write_json(args.out.with_suffix(".json"), meta)
    print(
        f"wrote {args.out} ({args.size}x{args.size} px, {args.mpp} m/px, zoom {patch.zoom}, "
        f"missing {patch.missing_fraction:.1%}) and {args.out.with_suffix('.json')}"
    )
    return 0


def _parse_bbox(text: str) -> Tuple[float, float, float, float]:
    try:
        s, w, n, e = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--bbox {text!r}: expected four numbers S,W,N,E in degrees") from None
    return s, w, n, e


def _prefetch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if not args.source.startswith(("http://", "https://")):
        raise ValueError(
            f"--source {args.source!r}: prefetch downloads from an http(s) URL template; local archives need no prefetch"
        )
    provider = restricted_provider(args.source)
    if provider and not args.licensed:
        raise ValueError(
            f"{provider}'s terms forbid bulk downloading of tiles for offline use; use a licensed "
            f"local archive (MBTiles/PMTiles/GeoTIFF), or pass --i-am-licensed if your licence allows it"
        )
    keys = [k for z in args.zoom for k in tiles_in_bbox(*_parse_bbox(args.bbox), z, max_tiles=args.max_tiles)]
    if len(keys) > args.max_tiles:
        raise ValueError(
            f"the box holds {len(keys)} tiles at zooms {args.zoom}, over the limit of --max-tiles {args.max_tiles}"
        )
    counts = {"cached": 0, "revalidated": 0, "fetched": 0, "uncacheable": 0, "missing": 0, "failed": 0}
    t0 = time.monotonic()
    with HTTPTileSource(args.source, args.cache, workers=args.workers, lru_tiles=0) as src:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        def one(key):
            try:
                return src.ensure_cached(*key), None
            except TileNotFound:
                return "missing", None
            except TileError as e:
                return "failed", e

        with ThreadPoolExecutor(max(1, args.workers)) as pool:
            futures = [pool.submit(one, k) for k in keys]
            for fut in tqdm(as_completed(futures), total=len(futures), unit="tile", desc="prefetch"):
                status, err = fut.result()
                counts[status] += 1
                if err is not None:
                    tqdm.write(f"failed: {err}")
    took = time.monotonic() - t0
    print(
        f"prefetch: {len(keys)} tiles in {took:.1f} s: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f"; cache {args.cache} (open it as xyz:{args.cache})"
    )
    return 1 if counts["failed"] else 0
