# SPDX-License-Identifier: Apache-2.0
"""Tiles from an HTTP(S) server by URL template, with a disk cache that obeys the server's headers.

Template fields: ``{z}`` ``{x}`` ``{y}`` (XYZ row, north = 0), ``{-y}`` (TMS row), ``{q}`` (Bing quadkey),
``{s}`` (a subdomain, chosen per tile from ``subdomains``). Any order works (``.../{z}/{y}/{x}`` for Esri).
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Tuple
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from xview_loc_ros import __version__
from xview_loc_ros.geo import tile_quadkey, xyz_to_tms_row
from xview_loc_ros.imageheader import image_kind
from xview_loc_ros.tiles.cache import DiskTileCache
from xview_loc_ros.tiles.errors import TileError, TileFetchError, TileNotFound
from xview_loc_ros.tiles.source import Tile, TileSource, decode_tile

log = logging.getLogger(__name__)

PROJECT_URL = "https://github.com/xview-loc/xview_loc_ros"
USER_AGENT = f"xview_loc_ros/{__version__} (+{PROJECT_URL})"
_FIELDS = {"z", "x", "y", "-y", "q", "s"}
#: Content types a tile server may label imagery with (some serve octet-stream).
_IMAGE_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    headers: Mapping[str, str]


class _OriginSession(requests.Session):
    """A session that sends the caller's own headers (API keys) to the template's server only.

    requests drops ``Authorization`` on a redirect to another host but forwards custom headers such as
    ``X-Api-Key``; these are dropped by the same rule (another host name, port or scheme, except an
    http -> https upgrade on default ports), and stay dropped for the rest of the redirect chain.
    """

    def __init__(self, private_headers: Mapping[str, str]) -> None:
        super().__init__()
        self._private = list(private_headers)

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if self.should_strip_auth(response.request.url or "", prepared_request.url or ""):
            for name in self._private:
                prepared_request.headers.pop(name, None)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after_s: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class HTTPTileSource(TileSource):
    """Tiles fetched from ``template``.

    ``timeout_s`` (connect, read) seconds, and each attempt's whole body must arrive within their sum
    (a server trickling bytes never trips the per-read timeout); ``deadline_s`` bounds one tile, all
    attempts and back-off included (default: ``retries + 1`` attempts' worth, at most 30 s);
    ``retries`` extra attempts on timeouts, connection errors, truncated bodies, 429 and 5xx with
    exponential back-off from ``backoff_s`` (capped at 30 s, honouring Retry-After up to that);
    responses over ``max_bytes`` are refused; TLS certificates are always verified (``ca_bundle``
    names a private CA file); ``headers`` (API keys) go to the template's host only, never along a
    redirect to another. ``cache_dir`` is an XYZ folder
    kept per Cache-Control/Expires (``default_ttl_s`` when the server says nothing); a stale tile is
    revalidated (ETag / Last-Modified) and served stale, with a warning, when the server is unreachable.
    """

    def __init__(
        self,
        template: str,
        cache_dir: str | Path | None = None,
        *,
        subdomains: str = "abc",
        min_zoom: int = 0,
        max_zoom: int = 22,
        timeout_s: Tuple[float, float] = (3.05, 10.0),
        retries: int = 3,
        backoff_s: float = 0.25,
        max_bytes: int = 4 << 20,
        default_ttl_s: float = 7 * 86400.0,
        headers: Optional[Mapping[str, str]] = None,
        ca_bundle: Optional[str] = None,
        deadline_s: Optional[float] = None,
        workers: int = 8,
        lru_tiles: int = 512,
    ) -> None:
        super().__init__(template, lru_tiles=lru_tiles, workers=workers)
        parts = urlsplit(template)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"tile URL {template!r} must start with http:// or https:// and name a host")
        fields = set(re.findall(r"{([^{}]*)}", template))
        unknown = fields - _FIELDS
        if unknown:
            raise ValueError(
                f"tile URL {template!r}: unknown field(s) {sorted(unknown)}; use {{z}} {{x}} {{y}} {{-y}} {{q}} {{s}}"
            )
        if not ({"q"} <= fields or {"z", "x"} <= fields and fields & {"y", "-y"}):
            raise ValueError(f"tile URL {template!r} needs {{z}}, {{x}} and {{y}} (or {{-y}}), or {{q}}")
        if "s" in fields and not subdomains:
            raise ValueError(f"tile URL {template!r} uses {{s}} but no subdomains were given")
        if retries < 0 or backoff_s < 0 or max_bytes <= 0:
            raise ValueError("HTTP retries and back-off must be >= 0 and max_bytes > 0")
        if deadline_s is not None and not deadline_s > 0:
            raise ValueError(f"HTTP tile deadline must be > 0 seconds, got {deadline_s!r}")
        self.template = template
        self.host = parts.hostname or ""
        self.subdomains = subdomains
        self.min_zoom, self.max_zoom = int(min_zoom), int(max_zoom)
        self.timeout_s = timeout_s
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.max_bytes = int(max_bytes)
        self.attempt_s = float(sum(timeout_s))
        self.deadline_s = (
            float(deadline_s) if deadline_s is not None else min(30.0, self.attempt_s * (self.retries + 1))
        )
        self.cache = DiskTileCache(cache_dir, default_ttl_s) if cache_dir is not None else None
        self._session = _OriginSession(headers or {})
        self._session.headers.update(
            {"User-Agent": USER_AGENT, "Accept": "image/png,image/jpeg,image/webp,image/*;q=0.8"}
        )
        self._session.headers.update(dict(headers or {}))
        # Passed with every request: a session-level setting loses to REQUESTS_CA_BUNDLE in requests.
        self._verify = str(ca_bundle) if ca_bundle else True
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(4, workers), max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def url_for(self, z: int, x: int, y: int) -> str:
        """The URL of XYZ tile (z, x, y)."""
        values = {"z": z, "x": x, "y": y}
        url = self.template
        if "{-y}" in url:
            url = url.replace("{-y}", str(xyz_to_tms_row(y, z)))
        if "{q}" in url:
            url = url.replace("{q}", tile_quadkey(x, y, z))
        if "{s}" in url:
            url = url.replace("{s}", self.subdomains[(x + y) % len(self.subdomains)])
        for k, v in values.items():
            url = url.replace("{" + k + "}", str(v))
        return url

    # -- loading ---------------------------------------------------------------------------------
    def _load(self, z: int, x: int, y: int) -> Tile:
        return self._obtain(z, x, y)[0]

    def ensure_cached(self, z: int, x: int, y: int) -> str:
        """Make the disk cache hold a fresh, valid copy of the tile without keeping it in memory.

        Returns "cached" (was fresh), "revalidated" (304), "fetched" or "uncacheable" (no-store)."""
        if self.cache is None:
            raise ValueError(f"{self.spec}: ensure_cached needs a cache folder")
        return self._obtain(z, x, y)[1]

    def _obtain(self, z: int, x: int, y: int) -> Tuple[Tile, str]:
        where = self._where(z, x, y)
        cached = self.cache.lookup(z, x, y) if self.cache else None
        if cached is not None and cached.fresh:
            try:
                return decode_tile(cached.path.read_bytes(), f"{where} (cached {cached.path})"), "cached"
            except TileError as e:
                log.warning("discarding bad cached tile: %s", e)
                cached = None
        cond = {}
        if cached is not None:
            if cached.etag:
                cond["If-None-Match"] = cached.etag
            if cached.last_modified:
                cond["If-Modified-Since"] = cached.last_modified
        try:
            resp = self._fetch(self.url_for(z, x, y), cond, where)
        except TileFetchError as e:
            if cached is None:
                raise
            log.warning("%s; serving the stale cached copy %s", e, cached.path)
            return decode_tile(cached.path.read_bytes(), f"{where} (stale {cached.path})"), "cached"
        if resp.status == 304 and cached is not None and self.cache is not None:
            self.cache.refresh(cached, resp.headers)
            return decode_tile(cached.path.read_bytes(), f"{where} (cached {cached.path})"), "revalidated"
        tile = decode_tile(resp.body, f"{where} ({self.url_for(z, x, y)})")
        status = "fetched"
        if self.cache is not None and not self.cache.store(
            z, x, y, image_kind(resp.body) or "png", resp.body, resp.headers
        ):
            status = "uncacheable"
        return tile, status

    def _fetch(self, url: str, extra_headers: Mapping[str, str], where: str) -> _Response:
        deadline = time.monotonic() + self.deadline_s
        attempt = 0
        while True:
            try:
                return self._fetch_once(url, extra_headers, where, min(deadline, time.monotonic() + self.attempt_s))
            except _Retryable as e:
                delay = e.retry_after_s if e.retry_after_s is not None else self.backoff_s * 2**attempt
                delay = min(30.0, delay) * (1.0 + 0.1 * random.random())
                attempt += 1
                if attempt > self.retries or time.monotonic() + delay >= deadline:
                    raise TileFetchError(
                        f"{where}: {url} failed after {attempt} attempt(s) (tile deadline {self.deadline_s:g} s): {e}"
                    ) from None
                time.sleep(delay)

    def _fetch_once(self, url: str, extra_headers: Mapping[str, str], where: str, deadline: float) -> _Response:
        started = time.monotonic()
        try:
            with self._session.get(
                url, headers=dict(extra_headers), timeout=self.timeout_s, stream=True, verify=self._verify
            ) as r:
                if r.status_code == 304:
                    return _Response(304, b"", r.headers)
                if r.status_code in (204, 404, 410):
                    raise TileNotFound(f"{where}: server answered {r.status_code} for {url}")
                if r.status_code == 429 or r.status_code >= 500:
                    retry_after = r.headers.get("Retry-After", "")
                    raise _Retryable(f"HTTP {r.status_code}", float(retry_after) if retry_after.isdigit() else None)
                if r.status_code != 200:
                    raise TileFetchError(f"{where}: server answered HTTP {r.status_code} for {url}")
                ctype = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if ctype and not ctype.startswith(_IMAGE_TYPES):
                    raise TileFetchError(f"{where}: {url} returned content type {ctype!r}, not an image")
                length = r.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > self.max_bytes:
                    raise TileFetchError(f"{where}: {url} is {int(length)} bytes, over the {self.max_bytes}-byte limit")
                body = bytearray()
                # read1 returns what one socket read brings, so the wall clock is checked between reads
                # (iter_content blocks until a whole chunk has arrived, however slowly).
                while chunk := r.raw.read1(65536, decode_content=True):
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise TileFetchError(f"{where}: {url} sent over the {self.max_bytes}-byte limit")
                    if time.monotonic() > deadline:
                        raise _Retryable(
                            f"body not complete within the {deadline - started:.3g} s deadline "
                            f"({len(body)} bytes received)"
                        )
                if length is not None and length.isdigit() and len(body) != int(length):
                    raise _Retryable(f"truncated body ({len(body)} of {length} bytes)")
                return _Response(200, bytes(body), r.headers)
        except requests.exceptions.SSLError as e:  # before ConnectionError (its base): not transient
            raise TileFetchError(f"{where}: TLS verification failed for {url}: {e}") from None
        except (requests.Timeout, requests.ConnectionError) as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from None
        except (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError) as e:
            raise _Retryable(f"truncated body: {e}") from None
        except urllib3.exceptions.ReadTimeoutError as e:  # raised by r.raw reads, which requests does not wrap
            raise _Retryable(f"ReadTimeout: {e}") from None
        except urllib3.exceptions.HTTPError as e:
            raise TileFetchError(f"{where}: {url}: {e}") from None
        except requests.RequestException as e:
            raise TileFetchError(f"{where}: {url}: {e}") from None

    def close(self) -> None:
        super().close()
        self._session.close()
        if self.cache is not None:
            self.cache.close()
