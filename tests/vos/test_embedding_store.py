"""The embedding store: budgets, disk spill, LRU eviction with a log line, keys."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from repvit_sam.segmenter import ImageEmbedding
from vos.config import ConfigError, load_config
from vos.embedding_store import EmbeddingStore, SpillCache, StoredSegmenter, model_key_of

MiB = 1 << 20


def embedding(seed: int) -> ImageEmbedding:
    """A 1 MiB embedding (1, 256, 32, 32) float32."""
    features = torch.randn((1, 256, 32, 32), generator=torch.Generator().manual_seed(seed))
    return ImageEmbedding(features=features, orig_hw=(48, 64), input_hw=(768, 1024))


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_memory_budget_spills_least_recently_used_to_disk(tmp_path: Path) -> None:
    store = EmbeddingStore("model-a", memory_mb=2.5, disk_mb=100, cache_dir=tmp_path)
    frames = [frame(i) for i in range(4)]
    for i, f in enumerate(frames):
        store.put(f, embedding(i))
    # Two fit in memory (1 MiB each); the two oldest went to disk.
    assert store.cache.memory_used <= 2.5 * MiB and len(store.cache) == 4
    assert len(list(tmp_path.glob("*.pt"))) == 2 and store.stats.spilled == 2
    # Read back from disk: equal to the bit, with its sizes.
    back = store.get(frames[0])
    assert back is not None and store.stats.disk_hits == 1
    assert torch.equal(back.features, embedding(0).features)
    assert back.orig_hw == (48, 64) and back.input_hw == (768, 1024)
    assert store.get(frame(99)) is None and store.stats.misses == 1


def test_disk_budget_evicts_least_recently_used_and_says_so(tmp_path: Path, caplog) -> None:
    store = EmbeddingStore("model-a", memory_mb=0, disk_mb=3.5, cache_dir=tmp_path)
    frames = [frame(i) for i in range(5)]
    with caplog.at_level(logging.INFO, logger="vos.embedding_store"):
        store.put(frames[0], embedding(0))
        store.put(frames[1], embedding(1))
        store.put(frames[2], embedding(2))
        assert store.get(frames[0]) is not None  # 0 is now the most recently used
        store.put(frames[3], embedding(3))
        store.put(frames[4], embedding(4))
    assert store.cache.disk_used <= 3.5 * MiB
    assert store.get(frames[1]) is None and store.get(frames[2]) is None  # the two oldest
    for i in (0, 3, 4):
        got = store.get(frames[i])
        assert got is not None and torch.equal(got.features, embedding(i).features)
    assert "evicted 1 least recently used file(s)" in caplog.text
    assert store.stats.evicted == 2


def test_keys_separate_models_and_frames_and_a_folder_is_reused(tmp_path: Path) -> None:
    a = EmbeddingStore("checkpoint_sha256=aa;fast_mode=exact", memory_mb=0, disk_mb=100,
                       cache_dir=tmp_path)
    a.put(frame(0), embedding(0))
    # Another frame, even one pixel apart, is another key.
    other = frame(0).copy()
    other[0, 0, 0] ^= 1
    assert a.get(other) is None
    # Another model (checkpoint or fast mode) never gets this model's embedding ...
    for key in ("checkpoint_sha256=bb;fast_mode=exact", "checkpoint_sha256=aa;fast_mode=nopad"):
        assert EmbeddingStore(key, memory_mb=0, disk_mb=100, cache_dir=tmp_path).get(
            frame(0)) is None
    # ... and the same model in a new session finds it on disk.
    again = EmbeddingStore("checkpoint_sha256=aa;fast_mode=exact", memory_mb=0, disk_mb=100,
                           cache_dir=tmp_path)
    got = again.get(frame(0))
    assert got is not None and torch.equal(got.features, embedding(0).features)


def test_model_key_names_everything_an_embedding_depends_on() -> None:
    base = load_config(None, []).model
    keys = {
        model_key_of(base, "aa"),
        model_key_of(base, "bb"),
        model_key_of(load_config(None, ["model.fast_mode=nopad"]).model, "aa"),
        model_key_of(load_config(None, ["model.backend=torch"]).model, "aa"),
        model_key_of(load_config(None, ["model.fuse=false"]).model, "aa"),
        model_key_of(load_config(None, ["model.model_type=vit_t"]).model, "aa"),
    }
    assert len(keys) == 6


def test_a_damaged_file_is_computed_again(tmp_path: Path, caplog) -> None:
    store = EmbeddingStore("m", memory_mb=0, disk_mb=100, cache_dir=tmp_path)
    store.put(frame(0), embedding(0))
    (path,) = tmp_path.glob("*.pt")
    path.write_bytes(b"not a tensor file")
    with caplog.at_level(logging.WARNING, logger="vos.embedding_store"):
        assert store.get(frame(0)) is None
    assert "unreadable" in caplog.text and not path.exists()


def test_stored_segmenter_encodes_each_frame_once() -> None:
    class Counting:
        calls = 0

        def encode(self, image):
            Counting.calls += 1
            return embedding(int(image[0, 0, 0]))

        def decode(self, emb, prompts):
            raise AssertionError("not used")

    segmenter = StoredSegmenter(Counting(), EmbeddingStore("m", memory_mb=100, disk_mb=0))
    frames = [frame(i) for i in range(3)]
    first = [segmenter.encode(f) for f in frames]
    second = [segmenter.encode(f) for f in frames]
    assert Counting.calls == segmenter.encodes == 3
    assert all(a is b for a, b in zip(first, second, strict=True))


def test_private_folder_is_removed_on_close() -> None:
    cache: SpillCache[bytes] = SpillCache(bytes, bytes, len, memory_bytes=0, disk_bytes=1000)
    cache.put("k", b"abc")
    folder = cache.folder
    assert folder is not None and (folder / "k.pt").is_file()
    assert cache.get("k") == b"abc"
    cache.close()
    assert not folder.exists()


def test_store_budgets_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"store\.memory_mb"):
        load_config(None, ["store.memory_mb=-1"])


def test_private_folder_is_removed_when_the_cache_is_dropped() -> None:
    import gc

    cache: SpillCache[bytes] = SpillCache(bytes, bytes, len, memory_bytes=0, disk_bytes=1000)
    cache.put("k", b"abc")
    folder = cache.folder
    assert folder is not None and folder.is_dir()
    del cache
    gc.collect()
    assert not folder.exists()
