# SPDX-License-Identifier: Apache-2.0
"""City index: grid, file round trip and refusals, search ranking and radius restriction."""

import numpy as np
import pytest

from xview_loc_ros.retrieval import CityIndex, IndexFileError, IndexGrid, load_index, save_index

GRID = IndexGrid(lat0=37.7749, lon0=-122.4194, radius_m=100.0, stride_m=20.0, mpp=0.5, size_px=128)


def _index(dim: int = 16, seed: int = 0) -> CityIndex:
    en = GRID.centres_en()
    d = np.random.default_rng(seed).normal(size=(len(en), dim)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return CityIndex(GRID, "ab" * 32, "xyz:/tiles", en, d)


def test_grid_is_a_disc_of_stride_points_north_row_first():
    en = GRID.centres_en()
    assert np.all(np.hypot(en[:, 0], en[:, 1]) <= 100.0 + 1e-9)
    assert [0.0, 0.0] in en.tolist() and [100.0, 0.0] in en.tolist() and [100.0, 20.0] not in en.tolist()
    assert len(en) == sum(1 for e in range(-5, 6) for n in range(-5, 6) if e * e + n * n <= 25)
    assert en[0, 1] == 100.0 and en[-1, 1] == -100.0
    with pytest.raises(ValueError, match="stride_m"):
        IndexGrid(37.0, -122.0, 100.0, 0.0, 0.5, 128)


def test_search_ranks_by_cosine_and_restricts_to_the_radius():
    idx = _index()
    target = 7
    q = idx.descriptors[target] * 3.0 + 0.01  # scale does not matter
    best = idx.search(q, k=5)
    assert best[0].entry == target and best[0].rank == 0 and best[0].score == pytest.approx(1.0, abs=1e-3)
    assert [c.score for c in best] == sorted((c.score for c in best), reverse=True)
    lat, lon = best[0].lat, best[0].lon
    assert idx.to_en(lat, lon) == pytest.approx((best[0].east, best[0].north), abs=1e-6)
    far = idx.east_north[target]
    near = (-far[0], -far[1])
    restricted = idx.search(q, k=50, near_en=near, radius_m=30.0)
    assert restricted and all(np.hypot(c.east - near[0], c.north - near[1]) <= 30.0 for c in restricted)
    assert target not in [c.entry for c in restricted] or np.hypot(*(far - near)) <= 30
    assert idx.search(q, k=3, near_en=(5000.0, 0.0), radius_m=10.0) == []
    with pytest.raises(ValueError, match="16"):
        idx.search(np.ones(8), k=1)
    with pytest.raises(ValueError, match="zero"):
        idx.search(np.zeros(16), k=1)


def test_file_round_trip_and_refusals(tmp_path):
    idx = _index()
    p = tmp_path / "city.npz"
    save_index(p, idx)
    back = load_index(p, model_sha256="ab" * 32)
    assert back.grid == GRID and back.tiles == "xyz:/tiles" and len(back) == len(idx)
    np.testing.assert_array_equal(back.descriptors, idx.descriptors)
    with pytest.raises(IndexFileError, match="model"):
        load_index(p, model_sha256="cd" * 32)
    with pytest.raises(IndexFileError, match="not found"):
        load_index(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(IndexFileError, match="bad.npz"):
        load_index(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(IndexFileError, match="not a city index"):
        load_index(other)
