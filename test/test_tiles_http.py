# SPDX-License-Identifier: Apache-2.0
"""HTTP tile source against a real tile server on 127.0.0.1: caching proven by server-side request
counts, injected failures (404, 500, slow, truncated, oversized, wrong type, corrupt), cache headers,
TLS verification, concurrency, URL templates, and the `xview-loc tiles` commands."""

from __future__ import annotations

import email.utils
import http.server
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections import Counter

import cv2
import numpy as np
import pytest

from xview_loc_ros import __version__
from xview_loc_ros.geo import tile_to_latlon
from xview_loc_ros.tiles import AerialPatchBuilder, TileDecodeError, TileFetchError, TileNotFound, open_tile_source
from xview_loc_ros.tiles.http import HTTPTileSource
from xview_testbed.cli import main as xview_loc


def tile_png(z: int, x: int, y: int) -> bytes:
    """A tile whose colour encodes its address (so a wrong tile is detectable)."""
    rgb = np.zeros((256, 256, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = (x * 37) % 256, (y * 53) % 256, z * 9
    rgb[100:110, 100:110] = 255
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return buf.tobytes()


def expected_rgb(z, x, y):
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(tile_png(z, x, y), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


class TileServer:
    """Serves /MODE/{z}/{x}/{y}.png; MODE picks the behaviour. Counts requests per path, remembers headers."""

    def __init__(self) -> None:
        self.hits: Counter = Counter()
        self.headers: dict = {}
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                with server.lock:
                    server.hits[self.path] += 1
                    server.headers[self.path] = dict(self.headers)
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                    n = server.hits[self.path]
                try:
                    server.respond(self, n)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server.lock:
                        server.active -= 1

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, mode: str) -> int:
        return sum(v for k, v in self.hits.items() if k.startswith(f"/{mode}/"))

    @staticmethod
    def respond(h, n: int) -> None:
        parts = h.path.strip("/").split("/")
        mode = parts[0]
        z, x, y = (int(p) for p in (parts[1], parts[2], parts[3].split(".")[0]))
        if mode == "yx":  # {z}/{y}/{x} order
            y, x = x, y
        body, ctype, extra = tile_png(z, x, y), "image/png", {"Cache-Control": "max-age=3600"}
        status = 200
        if mode == "404":
            status, body = 404, b"not found"
        elif mode == "500" or (mode == "flaky" and n == 1):
            status, body = 500, b"oops"
        elif mode == "slow":
            time.sleep(0.6)
        elif mode == "slowok":
            time.sleep(0.25)
        elif mode == "html":
            ctype, body = "text/html; charset=utf-8", b"<html>rate limited</html>"
        elif mode == "corrupt":
            body = b"\x89PNG\r\n\x1a\n" + b"\x00" * 300 + b"IEND\xaeB`\x82"
        elif mode == "badjpeg":
            ctype, body = "image/jpeg", b"\xff\xd8\xff\xe0" + b"\x11" * 500  # truncated: no EOI marker
        elif mode == "nostore":
            extra = {"Cache-Control": "no-store"}
        elif mode == "nocache":
            extra = {"Cache-Control": "no-cache", "ETag": '"v1"'}
            if h.headers.get("If-None-Match") == '"v1"':
                status, body = 304, b""
        elif mode == "expired":
            extra = {"Expires": email.utils.formatdate(time.time() - 60, usegmt=True)}
        elif mode == "down" and n > 1:
            status, body = 503, b"down"
        elif mode == "down":
            extra = {"Cache-Control": "max-age=0"}
        elif mode == "moved":  # same origin: the redirect keeps the request's headers
            status, body, extra = 302, b"", {"Location": h.path.replace("/moved/", "/ok/", 1)}
        elif mode.startswith("to-"):  # /to-PORT/...: redirect to /ok/... on localhost:PORT (another host)
            port = mode[3:]
            status, body, extra = (
                302,
                b"",
                {"Location": f"http://localhost:{port}" + h.path.replace(f"/{mode}/", "/ok/", 1)},
            )
        elif mode.startswith("port-"):  # /port-PORT/...: redirect to /ok/... on 127.0.0.1:PORT (same host name)
            port = mode[5:]
            status, body, extra = (
                302,
                b"",
                {"Location": f"http://127.0.0.1:{port}" + h.path.replace(f"/{mode}/", "/ok/", 1)},
            )
        h.send_response(status)
        h.send_header("Content-Type", ctype if status == 200 else "text/plain")
        for k, v in extra.items():
            h.send_header(k, v)
        if mode == "trunc":
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        if mode == "trickle":  # one byte every 0.4 s: each read is within the read timeout
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            for i in range(len(body)):
                h.wfile.write(body[i : i + 1])
                h.wfile.flush()
                time.sleep(0.4)
            return
        if mode == "big":
            h.send_header("Content-Length", str(10_000_000))
            h.end_headers()
            return
        if mode == "bigstream":  # no Content-Length: the body runs until the connection closes
            h.end_headers()
            for _ in range(40):
                h.wfile.write(b"\x89PNG" + b"\x00" * 65532)
            return
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if status != 304:
            h.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    s = TileServer().start()
    yield s
    s.stop()


def src(server, mode, tmp_path=None, **kw):
    kw.setdefault("retries", 2)
    kw.setdefault("backoff_s", 0.01)
    return open_tile_source(f"{server.base}/{mode}/{{z}}/{{x}}/{{y}}.png", cache_dir=tmp_path, **kw)


def test_disk_and_memory_cache_prove_no_refetch(server, tmp_path):
    cache = tmp_path / "cache"
    with src(server, "ok", cache) as s:
        a = s.get_tile(16, 100, 200)
        s.get_tile(16, 100, 200)
        assert server.hits["/ok/16/100/200.png"] == 1  # memory LRU
    np.testing.assert_array_equal(a, expected_rgb(16, 100, 200))
    assert a.shape == (256, 256, 3) and a.dtype == np.uint8
    with src(server, "ok", cache) as s2:  # a new process-like source: fresh disk copy, no request
        np.testing.assert_array_equal(s2.get_tile(16, 100, 200), a)
    assert server.hits["/ok/16/100/200.png"] == 1
    with open_tile_source(f"xyz:{cache}") as offline:  # the cache is a plain XYZ folder
        np.testing.assert_array_equal(offline.get_tile(16, 100, 200), a)
    ua = server.headers["/ok/16/100/200.png"]["User-Agent"]
    assert ua.startswith(f"xview_loc_ros/{__version__} (+http")


def test_404_is_tile_not_found_without_retries(server):
    with src(server, "404") as s:
        with pytest.raises(TileNotFound, match="404"):
            s.get_tile(5, 1, 2)
    assert server.hits["/404/5/1/2.png"] == 1


def test_500_retried_then_fetch_error_and_flaky_recovers(server):
    with src(server, "500", retries=2) as s, pytest.raises(TileFetchError, match="3 attempt"):
        s.get_tile(5, 1, 2)
    assert server.hits["/500/5/1/2.png"] == 3
    with src(server, "flaky") as s:
        np.testing.assert_array_equal(s.get_tile(5, 3, 4), expected_rgb(5, 3, 4))
    assert server.hits["/flaky/5/3/4.png"] == 2


def test_slow_server_times_out_bounded(server):
    t0 = time.monotonic()
    with src(server, "slow", timeout_s=(0.5, 0.2), retries=1) as s, pytest.raises(TileFetchError, match="Timeout"):
        s.get_tile(6, 1, 1)
    assert time.monotonic() - t0 < 2.0
    assert server.hits["/slow/6/1/1.png"] == 2


@pytest.mark.parametrize(
    "mode,err,match",
    [
        ("trunc", TileFetchError, "truncated"),
        ("big", TileFetchError, "byte limit"),
        ("bigstream", TileFetchError, "byte limit"),
        ("html", TileFetchError, "text/html"),
        ("corrupt", TileDecodeError, "PNG without an IHDR chunk"),
        ("badjpeg", TileDecodeError, "truncated JPG"),
    ],
)
def test_bad_responses_are_typed_errors_and_not_cached(server, tmp_path, mode, err, match):
    with src(server, mode, tmp_path, max_bytes=1 << 20) as s, pytest.raises(err, match=match):
        s.get_tile(7, 9, 9)
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("*.jpg"))


def test_cache_headers_no_store_no_cache_expires(server, tmp_path):
    with src(server, "nostore", tmp_path / "a") as s:
        s.get_tile(8, 1, 1)
    assert not list((tmp_path / "a").rglob("*.png"))
    for _ in range(2):  # no-cache: stored but revalidated (If-None-Match -> 304) on each new use
        with src(server, "nocache", tmp_path / "b") as s:
            np.testing.assert_array_equal(s.get_tile(8, 2, 2), expected_rgb(8, 2, 2))
    assert server.hits["/nocache/8/2/2.png"] == 2
    assert server.headers["/nocache/8/2/2.png"].get("If-None-Match") == '"v1"'
    for _ in range(2):  # an Expires in the past: fetched again each time
        with src(server, "expired", tmp_path / "c") as s:
            s.get_tile(8, 3, 3)
    assert server.hits["/expired/8/3/3.png"] == 2


def test_stale_copy_served_when_server_fails(server, tmp_path):
    with src(server, "down", tmp_path) as s:
        first = s.get_tile(9, 4, 4)
    with src(server, "down", tmp_path, retries=0) as s:  # stale (max-age=0) and the server now answers 503
        np.testing.assert_array_equal(s.get_tile(9, 4, 4), first)
    assert server.hits["/down/9/4/4.png"] == 2


def test_patch_tiles_fetched_concurrently_and_yx_order(server):
    lat, lon = [float(v) for v in tile_to_latlon(1000 + 1.5, 2000 + 1.5, 12)]
    with open_tile_source(f"{server.base}/slowok/{{z}}/{{x}}/{{y}}.png", workers=8) as s:
        t0 = time.monotonic()
        AerialPatchBuilder(s, 256, 60.0, zoom=12).build(lat, lon)  # needs 3x3 tiles
        took = time.monotonic() - t0
    assert server.count("slowok") >= 9 and server.max_active >= 4
    assert took < 9 * 0.25 * 0.8  # serial fetching would take >= 2.25 s
    with HTTPTileSource(f"{server.base}/yx/{{z}}/{{y}}/{{x}}.png") as s:
        np.testing.assert_array_equal(s.get_tile(10, 5, 7), expected_rgb(10, 5, 7))
    assert server.hits["/yx/10/7/5.png"] == 1


def test_same_tile_requested_by_two_threads_is_fetched_once(server):
    from concurrent.futures import ThreadPoolExecutor

    with src(server, "slowok") as s, ThreadPoolExecutor(4) as pool:
        tiles = list(pool.map(lambda _: s.get_tile(13, 7, 7), range(4)))
    assert server.hits["/slowok/13/7/7.png"] == 1
    for t in tiles:
        np.testing.assert_array_equal(t, expected_rgb(13, 7, 7))
    with src(server, "404") as s, ThreadPoolExecutor(3) as pool:  # waiters get the loader's error too
        errors = list(pool.map(lambda _: s._get_or_error((13, 7, 8)), range(3)))
    assert all(isinstance(e, TileNotFound) for e in errors)


def test_url_templates():
    s = HTTPTileSource("https://{s}.example.org/a/{z}/{x}/{-y}.jpg?q={q}", subdomains="ab")
    # MBTiles spec: XYZ 11/327/791 is TMS row 1256; quadkey by hand from the bits of x=327, y=791.
    assert s.url_for(11, 327, 791) == "https://a.example.org/a/11/327/1256.jpg?q=02301020333"
    # Bing's documented example: tile (3, 5) at level 3 has quadkey 213.
    assert s.url_for(3, 3, 5).endswith("/3/3/2.jpg?q=213") and s.url_for(3, 3, 5).startswith("https://a.")
    assert s.url_for(3, 2, 0).startswith("https://a.") and s.url_for(3, 3, 0).startswith("https://b.")
    for bad in ["ftp://x/{z}/{x}/{y}", "https://x/{z}/{x}", "https://x/{z}/{x}/{y}/{w}"]:
        with pytest.raises(ValueError):
            HTTPTileSource(bad)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a self-signed certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(d / "k.pem"),
            "-out",
            str(d / "c.pem"),
        ],
        check=True,
        capture_output=True,
    )
    s = TileServer()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "c.pem", d / "k.pem")
    s.httpd.socket = ctx.wrap_socket(s.httpd.socket, server_side=True)
    s.base = s.base.replace("http://", "https://")
    s.start()
    yield s, d / "c.pem"
    s.stop()


def test_tls_is_verified(tls_server):
    s, cert = tls_server
    with src(s, "ok") as untrusted, pytest.raises(TileFetchError, match="TLS"):
        untrusted.get_tile(4, 1, 1)
    with src(s, "ok", ca_bundle=str(cert)) as trusted:
        np.testing.assert_array_equal(trusted.get_tile(4, 1, 1), expected_rgb(4, 1, 1))


def test_cli_patch_and_prefetch(server, tmp_path, capsys):
    lat, lon = [float(v) for v in tile_to_latlon(300.5, 400.5, 10)]
    s_, w_ = [float(v) for v in tile_to_latlon(300.2, 401.8, 10)]
    n_, e_ = (
        [float(v) for v in tile_to_latlon(301.8, 400.2, 10)][0],
        [float(v) for v in tile_to_latlon(301.8, 401.8, 10)][1],
    )
    cache = tmp_path / "cache"
    tmpl = f"{server.base}/ok/{{z}}/{{x}}/{{y}}.png"
    rc = xview_loc(
        ["tiles", "prefetch", "--source", tmpl, "--cache", str(cache), "--zoom", "10", "--bbox", f"{s_},{w_},{n_},{e_}"]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "4 tiles" in out and "4 fetched" in out
    assert server.count("ok") >= 4 and len(list(cache.rglob("*.png"))) == 4
    before = server.count("ok")
    rc = xview_loc(
        ["tiles", "prefetch", "--source", tmpl, "--cache", str(cache), "--zoom", "10", "--bbox", f"{s_},{w_},{n_},{e_}"]
    )
    assert rc == 0 and "4 cached" in capsys.readouterr().out and server.count("ok") == before

    out_png = tmp_path / "p" / "patch.png"
    rc = xview_loc(
        [
            "tiles",
            "patch",
            "--source",
            f"xyz:{cache}",
            "--lat",
            str(lat),
            "--lon",
            str(lon),
            "--size",
            "64",
            "--mpp",
            "30",
            "--zoom",
            "10",
            "--out",
            str(out_png),
        ]
    )
    assert rc == 0
    meta = json.loads(out_png.with_suffix(".json").read_text())
    assert meta["size_px"] == 64 and meta["mpp"] == 30.0 and meta["zoom"] == 10
    assert abs(meta["center_lat"] - lat) < 1e-12 and meta["missing_fraction"] == 0.0
    assert cv2.imread(str(out_png)).shape == (64, 64, 3)


def test_cli_refuses_public_bulk_and_bad_input(tmp_path, capsys):
    rc = xview_loc(
        [
            "tiles",
            "prefetch",
            "--source",
            "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
            "--cache",
            str(tmp_path),
            "--zoom",
            "15",
            "--bbox",
            "52.0,4.0,52.01,4.01",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "OpenStreetMap" in err and "--i-am-licensed" in err and err.count("\n") == 1
    rc = xview_loc(
        [
            "tiles",
            "patch",
            "--source",
            "nope:x",
            "--lat",
            "0",
            "--lon",
            "0",
            "--size",
            "8",
            "--mpp",
            "1",
            "--out",
            str(tmp_path / "a.png"),
        ]
    )
    assert rc == 2 and "unknown tile source spec" in capsys.readouterr().err
    rc = xview_loc(
        [
            "tiles",
            "prefetch",
            "--source",
            "https://tiles.example.com/{z}/{x}/{y}.png",
            "--cache",
            str(tmp_path),
            "--zoom",
            "12",
            "20",
            "--bbox",
            "52.0,4.0,52.1,4.1",
            "--max-tiles",
            "500",
        ]
    )
    assert rc == 2 and "over the limit of" in capsys.readouterr().err


def test_restricted_providers_recognised():
    from xview_loc_ros.tiles.policy import restricted_provider

    assert restricted_provider("https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png") == "OpenStreetMap"
    assert "Esri" in restricted_provider(
        "https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{z}/{y}/{x}"
    )
    assert restricted_provider("https://mt1.google.com/vt/lyrs=s&x={x}&y={y}&z={z}") == "Google"
    assert "Bing" in restricted_provider("https://ecn.t{s}.tiles.virtualearth.net/tiles/a{q}.jpeg?g=1")
    assert restricted_provider("https://api.mapbox.com/v4/mapbox.satellite/{z}/{x}/{y}@2x.jpg90") == "Mapbox"
    assert restricted_provider("https://tiles.example.com/{z}/{x}/{y}.png") is None
    assert restricted_provider("https://notopenstreetmap.org.example.com/{z}/{x}/{y}.png") is None
    assert restricted_provider("mbtiles:/data/city.mbtiles") is None


# -- hostile servers: redirects to other hosts, trickled bodies; prefetch floods ---------------------------


@pytest.fixture(scope="module")
def other_server():
    s = TileServer().start()
    yield s
    s.stop()


def test_custom_headers_never_follow_a_redirect_to_another_host(server, other_server):
    """requests strips Authorization on a redirect to another host, not custom headers: the API key
    used to reach the other host."""
    port = other_server.base.rsplit(":", 1)[1]
    key = {"X-Api-Key": "secret-key"}
    for mode, y in ((f"to-{port}", 1), (f"port-{port}", 2)):  # localhost:PORT, then 127.0.0.1:PORT
        with src(server, mode, headers=key) as s:
            np.testing.assert_array_equal(s.get_tile(4, 1, y), expected_rgb(4, 1, y))
        assert server.headers[f"/{mode}/4/1/{y}.png"]["X-Api-Key"] == "secret-key"
        got = other_server.headers[f"/ok/4/1/{y}.png"]
        assert "X-Api-Key" not in got and got["User-Agent"].startswith("xview_loc_ros/"), (mode, got)
    with src(server, "moved", headers=key) as s:  # same scheme, host and port: the key is kept
        s.get_tile(4, 2, 2)
    assert server.headers["/ok/4/2/2.png"]["X-Api-Key"] == "secret-key"


def test_trickling_server_is_cut_at_the_tile_deadline(server):
    """A body trickled one byte per 0.4 s never trips the per-read timeout; before, one tile took
    len(body) * 0.4 s (the probe: 12 s with a (1, 2) s timeout)."""
    t0 = time.monotonic()
    with (
        src(server, "trickle", timeout_s=(0.5, 1.0), retries=0) as s,
        pytest.raises(TileFetchError, match="1.5 s deadline"),
    ):
        s.get_tile(6, 2, 2)
    assert time.monotonic() - t0 < 2.5
    t0 = time.monotonic()  # with retries, the whole tile still ends at deadline_s
    with src(server, "trickle", timeout_s=(0.5, 1.0), retries=5, deadline_s=2.0) as s, pytest.raises(TileFetchError):
        s.get_tile(6, 2, 3)
    assert time.monotonic() - t0 < 3.0
    assert server.hits["/trickle/6/2/3.png"] == 2


def test_prefetch_keeps_only_the_latest_request(server):
    """2,000 jumping fixes each asked for a prefetch: 1,998 jobs queued behind a slow server."""
    with open_tile_source(f"{server.base}/slowok/{{z}}/{{x}}/{{y}}.png", workers=2) as s:
        builder = AerialPatchBuilder(s, 64, 2.0, zoom=14)
        futures = [builder.prefetch([(10.0 + 0.01 * i, 20.0)], radius_m=1.0) for i in range(2000)]
        waiting = [f for f in futures if not f.done()]
        assert len(waiting) <= 2  # the one running and the latest request
        assert futures[-1].result(timeout=30).tiles >= 1
        assert futures[0].cancelled() or futures[0].done()
        assert sum(f.cancelled() for f in futures) >= 1997
        builder.close()
    # two jobs ran (the first, then the latest), each loading the 1 to 4 tiles around its point
    assert sum(n for path, n in server.hits.items() if path.startswith("/slowok/14/")) <= 2 * 4
