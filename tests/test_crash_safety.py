"""Crash safety: SIGKILL a writer at random moments, reopen, and check every acknowledged write.

After each kill the store must open, hold every batch the writer acknowledged with its
exact vectors, metadata and documents, and hold nothing else except, possibly, the one
batch that was in flight, whole. Full-text filters must agree with the documents.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import m2m
from _crash_writer import COLLECTION, Model, apply_to_model, make_batch, model_from_collection
from m2m.errors import CollectionNotFoundError

WRITER = Path(__file__).with_name("_crash_writer.py")


def _read_lines(stream, out: list[str], ready: threading.Event) -> None:
    for line in stream:
        out.append(line.strip())
        ready.set()  # the first line is "ready"


def _run_and_kill(path: Path, seed: int, start: int, delay: float, during_startup: bool) -> list[str]:
    """Start the writer and SIGKILL it ``delay`` s after it is ready (or after spawning); return its lines."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(seed), str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines, ready), daemon=True)
    reader.start()
    if not during_startup:
        assert ready.wait(timeout=120), "writer never became ready"
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    reader.join(timeout=30)
    stderr = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"writer died on its own ({proc.returncode}): {stderr}"
    return lines


def _store_contents(path: Path) -> Model | None:
    """What a fresh client sees; ``None`` when the collection was never created."""
    client = m2m.Client(path)  # must always open
    try:
        try:
            collection = client.get_collection(COLLECTION)
        except CollectionNotFoundError:
            return None
        contents = model_from_collection(collection)
        assert collection.count() == len(contents)
        _check_full_text(collection, contents)
        return contents
    finally:
        client.close()


def _check_full_text(collection, contents: Model) -> None:
    """``$contains`` / ``$not_contains`` agree with substring tests on the stored documents."""
    batches = sorted({meta["batch"] for _, meta, _ in contents.values() if meta}, reverse=True)[:3]
    needles = [f"marker{b}" for b in batches] + ["doc", '"hi"', "it's", "naïve", "Beta", "beta", "x", "yz"]
    for needle in needles:
        want = {i for i, (_, _, doc) in contents.items() if doc is not None and needle in doc}
        assert set(collection.get(where_document={"$contains": needle}, include=[])["ids"]) == want, needle
        want_not = {i for i, (_, _, doc) in contents.items() if doc is not None and needle not in doc}
        got_not = set(collection.get(where_document={"$not_contains": needle}, include=[])["ids"])
        assert got_not == want_not, needle


def _crash_cycles(tmp_path: Path, cycles: int, seed: int) -> dict[str, int]:
    path = tmp_path / "store"
    rng = random.Random(seed)
    model: Model = {}
    next_batch = 0  # batches [0, next_batch) are in the store
    stats = {
        "cycles": 0,
        "acked_batches": 0,
        "in_flight_landed": 0,
        "in_flight_absent": 0,
        "no_ack_cycles": 0,
        "startup_kills": 0,
    }
    for _ in range(cycles):
        # mostly mid-writing; one cycle in 8 during start-up, import and open
        during_startup = rng.random() < 0.125
        delay = rng.uniform(0.0, 1.0) if during_startup else rng.uniform(0.0, 0.3)
        lines = _run_and_kill(path, seed, next_batch, delay, during_startup)
        stats["startup_kills"] += during_startup
        acks = [int(line.split()[1]) for line in lines if line.startswith("ack ")]
        assert acks == list(range(next_batch, next_batch + len(acks))), "acks out of order"
        # replay the acknowledged batches on the model
        for b in acks:
            apply_to_model(make_batch(seed, b, model), model)
        acked_end = next_batch + len(acks)
        stored = _store_contents(path)
        if stored is None:
            assert not model and next_batch == 0 and not acks, "collection vanished"
            stats["cycles"] += 1
            stats["no_ack_cycles"] += 1
            continue
        with_in_flight = dict(model)
        apply_to_model(make_batch(seed, acked_end, model), with_in_flight)
        if stored == model:
            next_batch = acked_end
            stats["in_flight_absent"] += 1
        else:
            assert stored == with_in_flight, _describe_difference(stored, model, acked_end)
            model = with_in_flight
            next_batch = acked_end + 1
            stats["in_flight_landed"] += 1
        stats["cycles"] += 1
        stats["acked_batches"] += len(acks)
        stats["no_ack_cycles"] += not acks
    return stats


def _describe_difference(stored: Model, model: Model, in_flight: int) -> str:
    missing = sorted(set(model) - set(stored))[:5]
    extra = sorted(set(stored) - set(model))[:5]
    changed = sorted(i for i in set(stored) & set(model) if stored[i] != model[i])[:5]
    return (
        f"store matches neither the acknowledged state nor it plus batch {in_flight}: "
        f"missing {missing}, extra {extra}, changed {changed}"
    )


def test_sigkill_writer_30_cycles(tmp_path):
    stats = _crash_cycles(tmp_path, cycles=30, seed=11)
    print(f"crash cycles: {stats}")
    assert stats["cycles"] == 30
    assert stats["acked_batches"] > 30  # the writer got real work done between kills


@pytest.mark.slow
def test_sigkill_writer_200_cycles(tmp_path):
    stats = _crash_cycles(tmp_path, cycles=200, seed=12)
    print(f"crash cycles: {stats}")
    assert stats["cycles"] == 200
    assert stats["in_flight_landed"] + stats["in_flight_absent"] > 150
