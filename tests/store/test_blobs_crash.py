"""Crash safety and concurrency with real processes: ``kill -9`` in the middle of a
save, and two processes saving the same key at once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from blob_trees import snapshot

from circlet.store.blobs import LocalBlobStore

SAVE = """
import sys
from pathlib import Path
from circlet.store.blobs import LocalBlobStore
store = LocalBlobStore(Path(sys.argv[1]))
go = Path(sys.argv[5]) if len(sys.argv) > 5 else None
print("started", flush=True)
while go is not None and not go.exists():
    pass
entry = store.put_tree("cache/p", sys.argv[2], Path(sys.argv[3]), meta={"who": sys.argv[4]})
print(entry.manifest, entry.meta["who"], flush=True)
"""


def fill(root: Path, files: int, size: int, seed: int) -> None:
    """``files`` files of ``size`` bytes that compress a little (like real caches)."""
    rng = random.Random(seed)
    for i in range(files):
        d = root / f"d{i % 37}"
        d.mkdir(parents=True, exist_ok=True)
        block = rng.randbytes(size // 2)
        (d / f"f{i}.bin").write_bytes(block + block[: size - len(block)])


def start_save(
    store: Path, key: str, root: Path, who: str, go: Path | None = None
) -> subprocess.Popen[str]:
    args = [sys.executable, "-c", SAVE, str(store), key, str(root), who]
    if go is not None:
        args.append(str(go))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    return proc


def test_kill_9_mid_save_keeps_previous_cache(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    old_src = tmp_path / "old"
    fill(old_src, 300, 4096, seed=1)
    with LocalBlobStore(store_dir) as store:
        old = store.put_tree("cache/p", "deps-old", old_src)
    new_src = tmp_path / "new"
    # Calibrate: how long a save of fresh content takes here (~60 MB, 2,500 files).
    fill(new_src, 2500, 24_000, seed=100)
    proc = start_save(store_dir, "calibration", new_src, "new")
    started = time.monotonic()
    proc.communicate(timeout=120)
    full = time.monotonic() - started
    assert proc.returncode == 0
    rng = random.Random(1234)
    killed_midway = 0
    for attempt in range(4):
        fill(new_src, 2500, 24_000, seed=200 + attempt)  # new content: a real save
        proc = start_save(store_dir, f"deps-new-{attempt}", new_src, "new")
        time.sleep(rng.uniform(0.05, 0.65) * full)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed_midway += 1
        proc.communicate(timeout=60)
        with LocalBlobStore(store_dir) as store:
            assert store.get_tree("cache/p", "deps-old") == old
            newest = store.find_tree("cache/p", "deps-new-")
            out = tmp_path / f"restore-{attempt}"
            if newest is not None and newest.key == f"deps-new-{attempt}":
                store.restore_tree(newest, out)  # it finished: complete and right
                assert snapshot(out) == snapshot(new_src)
            store.restore_tree(old, tmp_path / f"old-{attempt}")
            assert snapshot(tmp_path / f"old-{attempt}") == snapshot(old_src)
            assert store.get_tree("cache/p", "calibration") is not None
    assert killed_midway >= 2
    with LocalBlobStore(store_dir) as store:
        store.prune()
        assert not list(store.packs_dir.glob("*.tmp"))
        store.restore_tree(old, tmp_path / "after-prune")
        assert snapshot(tmp_path / "after-prune") == snapshot(old_src)


def test_concurrent_saves_of_one_key_keep_one_complete_copy(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    LocalBlobStore(store_dir).close()
    a, b = tmp_path / "a", tmp_path / "b"
    fill(a, 400, 8000, seed=3)
    fill(b, 400, 8000, seed=4)
    go = tmp_path / "go"
    procs = [
        start_save(store_dir, "same-key", a, "a", go),
        start_save(store_dir, "same-key", b, "b", go),
    ]
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.split())
    # Both callers get the one entry that won, whoever they were.
    assert outputs[0] == outputs[1]
    with LocalBlobStore(store_dir) as store:
        entries = store.list_trees("cache/p")
        assert len(entries) == 1
        winner = a if entries[0].meta["who"] == "a" else b
        assert entries[0].manifest == outputs[0][0]
        store.restore_tree(entries[0], tmp_path / "out")
        assert snapshot(tmp_path / "out") == snapshot(winner)
        # The loser's packs were dropped or are garbage; collecting keeps the winner.
        store.prune()
        store.restore_tree(entries[0], tmp_path / "out2")
        assert snapshot(tmp_path / "out2") == snapshot(winner)
