"""Memory tiers: results identical to the in-RAM HRM2 index, budgets, prefetch, cold files."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from m2m.errors import IndexCorruptError, InvalidArgumentError
from m2m.index import HRM2Index, HRM2Params
from m2m.memory import TierConfig, TieredHRM2
from m2m.memory.cold_store import CODES, VECTORS, ColdStore, write_cold_file
from m2m.memory.warm_cache import WarmCache

K = 10


def clustered(n=4000, d=32, n_clusters=40, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32) * 2.0
    x = (centres[rng.integers(0, n_clusters, n)] + 0.6 * rng.standard_normal((n, d))).astype(np.float32)
    return x


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module", params=["cosine", "l2", "ip"])
def built(request, tmp_path_factory):
    metric = request.param
    x = clustered()
    if metric == "cosine":
        x = unit(x)
    slots = np.arange(x.shape[0], dtype=np.int64) * 3 + 1  # sparse slots, like rowids
    ix = HRM2Index.build(x, slots, metric, HRM2Params(calib_queries=64, seed=1, kmeans_iters=8))
    rng = np.random.default_rng(7)
    q = x[rng.choice(x.shape[0], 64, replace=False)] + 0.3 * rng.standard_normal((64, x.shape[1]))
    q = unit(q) if metric == "cosine" else q.astype(np.float32)
    directory = tmp_path_factory.mktemp(f"tiers_{metric}")
    budget = int(0.1 * x.nbytes)  # 10% of the vector bytes
    tiered = TieredHRM2.create(ix, directory, TierConfig(warm_bytes=budget), state_version=7)
    assert tiered.state_version == 7
    yield ix, tiered, q, x, slots
    tiered.close()


def same(a, b):
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("lod", [0, 1, 2])
def test_identical_to_in_ram(built, lod):
    ix, tiered, q, _, _ = built
    for n_probe in (1, 3, 12):
        for batch in (q, q[:3], q[0]):  # batch path, query-by-query path, the one-query hot path
            same(
                ix.search(batch, K, n_probe=n_probe, lod=lod),
                tiered.search(batch, K, n_probe=n_probe, lod=lod),
            )


def test_progressive_identical(built):
    ix, tiered, q, _, _ = built
    for a, b in zip(ix.search_progressive(q[0], K, n_probe=4), tiered.search_progressive(q[0], K, n_probe=4),
                    strict=True):  # fmt: skip
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])


def test_identical_with_filter_and_target_recall(built):
    ix, tiered, q, _, slots = built
    rng = np.random.default_rng(3)
    for frac in (0.02, 0.3, 0.9):
        allowed = np.zeros(slots.max() + 1, dtype=bool)
        allowed[rng.choice(slots, int(frac * slots.size), replace=False)] = True
        for lod in (1, 2):
            same(ix.search(q, K, n_probe=4, lod=lod, allowed=allowed),
                 tiered.search(q, K, n_probe=4, lod=lod, allowed=allowed))  # fmt: skip
    same(ix.search(q, K, target_recall=0.9), tiered.search(q, K, target_recall=0.9))


def test_exhaustive_matches_exact_results(built):
    """Probing every list at LOD 2 is an exact scan; the tiers stream it list by list, so the
    float32 products are blocked differently: same ids, distances equal to float rounding."""
    ix, tiered, q, x, _ = built
    a = ix.search(q, K, n_probe=ix.n_lists)
    b = tiered.search(q, K, n_probe=ix.n_lists)
    np.testing.assert_array_equal(a[1], b[1])
    # float32 rounding is relative to the terms summed (l2: ||q||² + ||x||² - 2 q·x)
    scale = 1.0 + float((q * q).sum(1).max() + (x * x).sum(1).max())
    np.testing.assert_allclose(a[0], b[0], rtol=0, atol=1e-6 * scale)


def test_concurrent_queries_respect_budget_and_match_serial(built):
    ix, tiered, q, _, _ = built
    serial = [ix.search(q[i : i + 16], K, n_probe=6) for i in range(0, 64, 16)]
    serial += [ix.search(q[i], K, n_probe=6) for i in range(8)]
    warm = tiered.store.warm
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def worker(t):
        try:
            out = []
            for _ in range(3):
                out = [tiered.search(q[i : i + 16], K, n_probe=6) for i in range(0, 64, 16)]
                out += [tiered.search(q[i], K, n_probe=6) for i in range(8)]
            results[t] = out
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for out in results.values():
        for a, b in zip(serial, out, strict=True):
            same(a, b)
    pin_budget = tiered.store.prefetcher.pin_budget
    assert warm.peak_unpinned_bytes <= warm.budget
    assert warm.peak_bytes <= warm.budget + pin_budget
    assert warm.nbytes <= warm.budget
    assert warm.pinned_bytes() == 0  # every plan closed: nothing left pinned
    # every resident entry equals the index's rows (prefetched or read on a miss)
    off = ix._offsets
    for key in list(warm._window) + list(warm._main):
        j, part = key
        got = warm.get(key)
        ref = (ix._codes if part == CODES else ix._vecs)[off[j] : off[j + 1]]
        np.testing.assert_array_equal(got, ref)


def test_prefetch_reads_equal_file_contents(built):
    """Drive the prefetcher directly: it loads a plan's keys ahead (pinned, within its pin
    budget), the loaded arrays equal the index's lists, and claiming unpins them."""
    ix, tiered, _, _, _ = built
    store = tiered.store
    pf = store.prefetcher
    store.warm.clear()
    keys = [(j, CODES) for j in range(ix.n_lists)]
    hits_before = store.counters["prefetch_hits"]
    plan = store.begin(keys)
    deadline = 200
    with pf.cv:  # wait until the prefetcher is blocked by its pin budget or done
        while deadline and (
            plan.pos < len(keys) and pf._pinned_bytes + store._size_of(keys[plan.pos]) <= pf.pin_budget
        ):
            pf.cv.wait(timeout=0.05)
            deadline -= 1
    assert plan.pinned, "the prefetcher loaded nothing ahead"
    assert pf._pinned_bytes <= pf.pin_budget
    for key in keys:  # consume in order, as a search does
        value = store.part(*key)
        lo, hi = ix._offsets[key[0]], ix._offsets[key[0] + 1]
        np.testing.assert_array_equal(value, ix._codes[lo:hi])
    assert store.counters["prefetch_hits"] > hits_before  # consumed what was loaded ahead
    store.end(plan)
    assert store.warm.pinned_bytes() == 0
    assert store.warm.nbytes <= store.warm.budget


def test_no_prefetch_and_zero_budget_still_identical(built, tmp_path):
    ix, tiered, q, _, _ = built
    for cfg in (TierConfig(warm_bytes=0), TierConfig(warm_bytes=1 << 20, prefetch=False),
                TierConfig(warm_bytes=1 << 20, read_mode="mmap")):  # fmt: skip
        with TieredHRM2.open(tiered.directory, cfg) as t2:
            same(ix.search(q, K, n_probe=5), t2.search(q, K, n_probe=5))
            assert t2.store.warm.nbytes <= cfg.warm_bytes


def test_stats_report_every_tier(built):
    _, tiered, q, _, _ = built
    tiered.search(q, K, n_probe=4)
    s = tiered.stats()
    for tier in ("cold", "warm"):
        assert {"bytes_moved", "time_s"} <= set(s[tier])
    assert s["warm"]["hits"] + s["warm"]["misses"] > 0
    assert s["warm"]["resident_bytes"] <= s["warm"]["budget_bytes"]
    assert s["cold"]["bytes_moved"] > 0
    assert s["ram_overhead_bytes"] < tiered.list_bytes()


def test_overflow_rows_and_tombstones_are_snapshotted_compacted(tmp_path):
    x = clustered(n=3000, seed=4)
    ix = HRM2Index.build(x[:2500], np.arange(2500), "l2", HRM2Params(calib_queries=0))
    ix.add(np.arange(2500, 3000), x[2500:])
    ix.remove(np.arange(0, 300, 3))
    with TieredHRM2.create(ix, tmp_path / "t", TierConfig(warm_bytes=1 << 20)) as tiered:
        ix.compact()  # the tier snapshot is the compacted index
        q = x[:20] + 0.1
        for lod in (1, 2):
            same(ix.search(q, K, n_probe=4, lod=lod), tiered.search(q, K, n_probe=4, lod=lod))


# ---- cold files ------------------------------------------------------------------------------
def _cold(tmp_path, n=500, d=8, lists=7):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((n, d)).astype(np.float32)
    c = rng.standard_normal((n, 3)).astype(np.float32)
    offsets = np.linspace(0, n, lists + 1).astype(np.int64)
    path = tmp_path / "lists.cold"
    write_cold_file(path, v, c, offsets)
    return path, v, c, offsets


def test_cold_file_round_trip_and_row_reads(tmp_path):
    path, v, c, offsets = _cold(tmp_path)
    for mode in ("pread", "mmap"):
        store = ColdStore(path, offsets, mode=mode)
        for j in range(offsets.size - 1):
            np.testing.assert_array_equal(store.read(j, VECTORS), v[offsets[j] : offsets[j + 1]])
            np.testing.assert_array_equal(store.read(j, CODES), c[offsets[j] : offsets[j + 1]])
        local = np.array([0, 1, 2, 5, 9, 10])
        np.testing.assert_array_equal(store.read_rows(3, local), v[offsets[3] + local])
        store.close()
    assert not (tmp_path / "lists.cold.tmp").exists()


def test_truncated_cold_file_is_detected(tmp_path):
    path, _, _, offsets = _cold(tmp_path)
    size = path.stat().st_size
    for cut in (size - 1, size // 2, 100):
        data = path.read_bytes()
        bad = tmp_path / f"cut{cut}.cold"
        bad.write_bytes(data[:cut])
        with pytest.raises(IndexCorruptError):
            ColdStore(bad, offsets)


def test_corrupted_list_fails_its_checksum(tmp_path):
    path, _, _, offsets = _cold(tmp_path)
    store = ColdStore(path, offsets)
    at = store.header["vectors_at"] + int(offsets[2]) * 8 * 4 + 5
    store.close()
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    store = ColdStore(path, offsets)
    store.read(1, VECTORS)  # untouched lists still read
    with pytest.raises(IndexCorruptError, match="CRC"):
        store.read(2, VECTORS)
    store.close()


def test_interrupted_rewrite_keeps_the_old_file(tmp_path, monkeypatch):
    path, v, c, offsets = _cold(tmp_path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_cold_file(path, v * 2, c, offsets)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file is intact; only the .tmp is partial
    ColdStore(path, offsets).close()


def test_missing_tier_directory_raises(tmp_path):
    with pytest.raises(IndexCorruptError):
        TieredHRM2.open(tmp_path, TierConfig(warm_bytes=1))
    with pytest.raises(InvalidArgumentError):
        TierConfig(warm_bytes=-1).validate()


# ---- the warm cache policy ---------------------------------------------------------------------
def test_warm_cache_byte_budget_and_scan_resistance():
    cache = WarmCache(10_000, window_fraction=0.1, age_every=10_000)
    hot = [("h", i) for i in range(8)]  # 8 x 1000 B popular entries
    for _ in range(5):
        for key in hot:
            cache.touch(key)
            if cache.get(key) is None:
                cache.put(key, np.zeros(1), 1000)
    assert all(key in cache for key in hot)
    for i in range(200):  # a one-off scan of 200 cold entries
        key = ("scan", i)
        cache.touch(key)
        cache.put(key, np.zeros(1), 1000)
        assert cache.nbytes <= cache.budget
    assert sum(key in cache for key in hot) >= 7  # the scan did not flush the popular set
    assert not cache.put(("big", 0), np.zeros(1), 20_000)  # larger than the budget: not kept


def test_warm_cache_pins_are_never_evicted():
    cache = WarmCache(3000, window_fraction=0.34)
    cache.put("p", 1, 1000, pin=True)
    for i in range(20):
        cache.put(i, i, 1000)
        assert "p" in cache
        assert cache.nbytes <= cache.budget
    cache.unpin("p")
    for i in range(20, 40):
        cache.touch(i)
        cache.touch(i)
        cache.put(i, i, 1000)
    assert "p" not in cache


# ---- the hot tier (torch on the CPU stands in for the GPU) -------------------------------------
def test_hot_tier_search_matches_exact_gpu_path_and_respects_budget(tmp_path):
    torch = pytest.importorskip("torch")
    from m2m.index.gpu_search import GPUSearch
    from m2m.memory.hot_gpu import TieredGPUSearch

    x = unit(clustered(n=3000, seed=5))
    ix = HRM2Index.build(x, np.arange(x.shape[0]) + 10, "cosine", HRM2Params(calib_queries=0, kmeans_iters=8))
    q = unit(x[:40] + 0.2 * np.random.default_rng(0).standard_normal(x[:40].shape).astype(np.float32))
    hot_budget = int(0.2 * x.nbytes)
    cfg = TierConfig(warm_bytes=int(0.1 * x.nbytes), hot_bytes=hot_budget, device="cpu")
    with TieredHRM2.create(ix, tmp_path / "t", cfg) as tiered:
        assert tiered.hot is not None and tiered.hot.device == torch.device("cpu")
        search = TieredGPUSearch(tiered)
        ref = GPUSearch(ix, device="cpu", scan="exact")
        for _ in range(3):  # repeated queries: frequent lists get promoted, then hit
            d, s = search.search(q, K, n_probe=6)
            rd, rs = ref.search(q, K, n_probe=6)
            np.testing.assert_array_equal(s, rs)
            np.testing.assert_allclose(d, rd, rtol=0, atol=1e-4)
            assert tiered.hot.nbytes <= hot_budget
        hot = tiered.stats()["hot"]
        assert hot["promotions"] > 0 and hot["hits"] > 0 and hot["bytes_moved"] > 0
        assert hot["resident_bytes"] <= hot["budget_bytes"]
