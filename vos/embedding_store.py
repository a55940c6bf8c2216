"""Bounded caches that spill to disk: frame embeddings and per-frame tracker states.

The video predictor (``vos.video_predictor``) re-propagates after every correction. Encoding a
frame costs ~1 s on a laptop CPU and decoding one object ~50 ms, so re-propagation runs at
decoder speed only if the embeddings of the frames it crosses are at hand. SAM 2 keeps the
features of the last frame only (sam2 issue #565); keeping them all in memory costs 4 MiB a
frame (a 1024² embedding), 8 GiB for a 2,000-frame video. So:

- :class:`SpillCache` keeps values in memory up to a byte budget, moves the least recently
  used ones to a folder on disk beyond it, and deletes the least recently used files once
  that folder passes its own budget (each eviction is logged);
- :class:`EmbeddingStore` is that cache keyed by the model (checkpoint hash and every model
  setting that changes an embedding) and the frame's content (SHA-256 of its pixels), so an
  embedding is never handed to another model, another fast mode or another frame;
- :class:`StoredSegmenter` puts the store in front of any segmenter's ``encode``.

Files are written atomically (temp file + rename) and read back with ``weights_only=True``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import pickle
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from repvit_sam.segmenter import DecodePrompts, ImageEmbedding, MaskPrediction, SegmenterWrapper
from vos.io.atomic import atomic_open

logger = logging.getLogger(__name__)

__all__ = ["EmbeddingStore", "SpillCache", "StoreStats", "StoredSegmenter", "default_cache_dir"]

V = TypeVar("V")
MiB = 1 << 20


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/repvit-vos/embeddings`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "repvit-vos" / "embeddings"


@dataclass
class StoreStats:
    """Counters of a :class:`SpillCache` (for the bench and the log).

    Attributes:
        memory_hits: gets answered from memory.
        disk_hits: gets answered from the disk folder.
        misses: gets that found nothing (the caller computes the value).
        spilled: values moved from memory to disk.
        evicted: files deleted from disk to keep within the disk budget.
    """

    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    spilled: int = 0
    evicted: int = 0


@dataclass
class _Entry(Generic[V]):
    value: V
    nbytes: int


class SpillCache(Generic[V]):
    """An LRU cache with a memory budget that spills to a disk folder with its own budget.

    Args:
        dumps: value -> bytes, for the disk tier.
        loads: bytes -> value (inverse of ``dumps``).
        nbytes: the memory a value takes (counted against ``memory_bytes``).
        memory_bytes: values kept in memory at most (0 = spill every value at once).
        disk_bytes: bytes of files kept in ``folder`` at most (0 = no disk tier: values
            leaving memory are dropped).
        folder: where spilled values live; None makes a private temporary folder, removed
            by :meth:`close`. An existing folder's files are adopted (a persistent cache),
            oldest access first.
        name: what the log lines call the values ("embedding", "frame state").
        write_through: also write every value to the disk folder when it is put (not only
            when memory overflows), so a named folder holds everything after a kill; the
            annotator's sessions persist their stores this way.

    Example:
        >>> cache = SpillCache(pickle.dumps, pickle.loads, len, memory_bytes=1 << 20,
        ...                    disk_bytes=1 << 30)
        >>> cache.put("k", b"value"); cache.get("k")
    """

    def __init__(
        self,
        dumps: Callable[[V], bytes],
        loads: Callable[[bytes], V],
        nbytes: Callable[[V], int],
        *,
        memory_bytes: int,
        disk_bytes: int,
        folder: str | os.PathLike[str] | None = None,
        name: str = "value",
        write_through: bool = False,
    ) -> None:
        if memory_bytes < 0 or disk_bytes < 0:
            raise ValueError(f"{name} cache: budgets must be >= 0, got memory {memory_bytes}, "
                             f"disk {disk_bytes}")
        self._dumps, self._loads, self._nbytes = dumps, loads, nbytes
        self.memory_bytes, self.disk_bytes = int(memory_bytes), int(disk_bytes)
        self.name = name
        self.write_through = write_through
        self._unwritable_said = False
        self.stats = StoreStats()
        self._memory: collections.OrderedDict[str, _Entry[V]] = collections.OrderedDict()
        self._memory_used = 0
        # Disk tier: key -> file size, least recently used first.
        self._disk: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._disk_used = 0
        self._own_folder = folder is None
        # One lock for both tiers: a background encoder thread (the annotator's) and the
        # request threads share a store.
        self._lock = threading.RLock()
        self.folder: Path | None = None
        if disk_bytes > 0:
            self.folder = Path(tempfile.mkdtemp(prefix=f"repvit-vos-{name.replace(' ', '-')}-")
                               if folder is None else folder)
            self.folder.mkdir(parents=True, exist_ok=True)
            if self._own_folder:
                # Removed when the cache is closed, garbage-collected or the interpreter
                # exits: SAM 2 code never calls close(), and a spilled session can hold GBs.
                self._finalizer = weakref.finalize(self, shutil.rmtree, self.folder, True)
            self._adopt_files()

    # ------------------------------------------------------------------ public API
    def __contains__(self, key: str) -> bool:
        with self._lock:  # a value moving from memory to disk is in one tier or the other
            return key in self._memory or key in self._disk

    def __len__(self) -> int:
        with self._lock:
            return len(self._memory) + len(self._disk)

    @property
    def memory_used(self) -> int:
        """Bytes of the values held in memory."""
        return self._memory_used

    @property
    def disk_used(self) -> int:
        """Bytes of the files in the disk folder."""
        return self._disk_used

    def get(self, key: str) -> V | None:
        """The value of ``key`` (from memory, else disk, then kept in memory), or None."""
        with self._lock:
            entry = self._memory.get(key)
            if entry is not None:
                self._memory.move_to_end(key)
                self.stats.memory_hits += 1
                return entry.value
            if key in self._disk:
                path = self._path(key)
                try:
                    value = self._loads(path.read_bytes())
                except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
                    # Deleted by another process sharing the folder, or a damaged file.
                    logger.warning("%s cache: %s unreadable (%s); computing it again", self.name,
                                   path.name, exc)
                    self._forget_file(key)
                else:
                    # The file stays (spilling this value again costs nothing).
                    self.stats.disk_hits += 1
                    self._disk.move_to_end(key)
                    self._keep(key, value)
                    return value
            self.stats.misses += 1
            return None

    def put(self, key: str, value: V) -> None:
        """Store ``value`` under ``key`` (replacing an older one), spilling as budgets ask."""
        with self._lock:
            self.discard(key)
            if self.write_through:
                try:
                    self._spill(key, value)
                except (TypeError, KeyError, AttributeError, ValueError,
                        pickle.PicklingError) as exc:
                    # A value this cache cannot serialise (a test fake's embedding): it
                    # stays in memory only, said once.
                    if not self._unwritable_said:
                        self._unwritable_said = True
                        logger.warning("%s cache: a %s cannot be written to disk (%s); kept in "
                                       "memory only", self.name, type(value).__name__, exc)
            self._keep(key, value)

    def discard(self, key: str) -> None:
        """Forget ``key`` in memory and on disk (no error if absent)."""
        with self._lock:
            entry = self._memory.pop(key, None)
            if entry is not None:
                self._memory_used -= entry.nbytes
            if key in self._disk:
                self._forget_file(key)

    def clear(self) -> None:
        """Forget every value (files of the disk folder included)."""
        with self._lock:
            for key in list(self._memory):
                self.discard(key)
            for key in list(self._disk):
                self._forget_file(key)

    def close(self) -> None:
        """Drop the memory tier; remove the disk folder if the cache made it."""
        with self._lock:
            self._memory.clear()
            self._memory_used = 0
            if self._own_folder and self.folder is not None:
                self._finalizer()
                self._disk.clear()
                self._disk_used = 0

    # ------------------------------------------------------------------ internals
    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.pt"

    def _adopt_files(self) -> None:
        assert self.folder is not None
        files = []
        for path in self.folder.glob("*.pt"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                files.append((stat.st_mtime_ns, path.stem, stat.st_size))
        for _, key, size in sorted(files):
            self._disk[key] = size
            self._disk_used += size
        self._trim_disk()

    def _keep(self, key: str, value: V) -> None:
        size = int(self._nbytes(value))
        self._memory[key] = _Entry(value, size)
        self._memory_used += size
        while self._memory_used > self.memory_bytes and self._memory:
            old_key, old = self._memory.popitem(last=False)
            self._memory_used -= old.nbytes
            self._spill(old_key, old.value)

    def _spill(self, key: str, value: V) -> None:
        if self.folder is None:
            return  # no disk tier: the value is dropped
        if key in self._disk:
            self._disk.move_to_end(key)
            return
        data = self._dumps(value)
        if len(data) > self.disk_bytes:
            return
        path = self._path(key)
        with atomic_open(path, "wb") as handle:
            handle.write(data)
        self._disk[key] = len(data)
        self._disk_used += len(data)
        self.stats.spilled += 1
        self._trim_disk()

    def _trim_disk(self) -> None:
        count = freed = 0
        while self._disk_used > self.disk_bytes and self._disk:
            key, size = next(iter(self._disk.items()))
            self._forget_file(key)
            count += 1
            freed += size
        if count:
            self.stats.evicted += count
            logger.info("%s cache: evicted %d least recently used file(s), %.1f MiB, from %s "
                        "(disk budget %.0f MiB)", self.name, count, freed / MiB, self.folder,
                        self.disk_bytes / MiB)

    def _forget_file(self, key: str) -> None:
        size = self._disk.pop(key, 0)
        self._disk_used -= size
        with contextlib.suppress(OSError):
            self._path(key).unlink()


# ---------------------------------------------------------------------- embeddings
def _embedding_dumps(embedding: ImageEmbedding) -> bytes:
    fields = {f.name: getattr(embedding, f.name) for f in dataclasses.fields(embedding)}
    fields["features"] = fields["features"].detach().cpu().contiguous()
    buffer = io.BytesIO()
    torch.save(fields, buffer)
    return buffer.getvalue()


def _tensor_bytes(embedding: Any) -> int:
    features = getattr(embedding, "features", None)
    if isinstance(features, torch.Tensor):
        return features.numel() * features.element_size() + 256
    return 4 * MiB  # an unknown embedding type: assume SAM's 1024² size


class EmbeddingStore:
    """Frame embeddings of one model, in memory up to a budget, then on disk up to another.

    Args:
        model_key: text that names everything an embedding depends on besides the frame:
            checkpoint hash, model type, backend, fast mode, device, fusion
            (:func:`model_key_of`).
        memory_mb: MiB of embeddings kept in memory (a 1024² embedding is 4 MiB).
        disk_mb: MiB of embeddings kept in ``cache_dir`` (0 = memory only).
        cache_dir: the disk folder; None makes a temporary one for this store's lifetime.
            Its files are named by (model, frame content), so a shared folder never gives
            one model's embedding to another.
        device: where embeddings read from disk are placed (the model's device).
    """

    def __init__(
        self,
        model_key: str,
        *,
        memory_mb: float = 1024,
        disk_mb: float = 8192,
        cache_dir: str | os.PathLike[str] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model_key = model_key
        self._model_digest = hashlib.sha256(model_key.encode()).digest()
        self._device = torch.device(device)
        self.cache: SpillCache[ImageEmbedding] = SpillCache(
            _embedding_dumps, self._loads, _tensor_bytes,
            memory_bytes=int(memory_mb * MiB), disk_bytes=int(disk_mb * MiB),
            folder=cache_dir, name="embedding")

    def _loads(self, data: bytes) -> ImageEmbedding:
        fields = torch.load(io.BytesIO(data), map_location=self._device, weights_only=True)
        if not isinstance(fields, dict) or "features" not in fields:
            raise ValueError("not an embedding file")
        return ImageEmbedding(**fields)

    def key(self, frame: np.ndarray) -> str:
        """The store key of a frame: SHA-256 over the model key and the frame's pixels."""
        digest = hashlib.sha256(self._model_digest)
        digest.update(str(frame.shape).encode())
        digest.update(np.ascontiguousarray(frame).data)
        return digest.hexdigest()[:40]

    def get(self, frame: np.ndarray) -> ImageEmbedding | None:
        """The stored embedding of ``frame`` ((H, W, 3) uint8 RGB), or None."""
        return self.cache.get(self.key(frame))

    def put(self, frame: np.ndarray, embedding: ImageEmbedding) -> None:
        """Store the embedding of ``frame``."""
        self.cache.put(self.key(frame), embedding)

    @property
    def stats(self) -> StoreStats:
        return self.cache.stats

    def close(self) -> None:
        """Release memory; remove the disk folder if the store made it."""
        self.cache.close()


def model_key_of(model_cfg: Any, checkpoint_sha256: str | None) -> str:
    """The model part of an embedding's key: the checkpoint hash and the encoder settings."""
    fast_mode = getattr(model_cfg, "fast_mode", "exact")
    parts = {
        "checkpoint_sha256": checkpoint_sha256,
        "model_type": getattr(model_cfg, "model_type", None),
        "backend": getattr(model_cfg, "backend", None),
        "fast_mode": getattr(fast_mode, "name", str(fast_mode)),
        "device": str(getattr(model_cfg, "device", "cpu")),
        "fuse": getattr(model_cfg, "fuse", None),
        "dtype": getattr(model_cfg, "dtype", None),
    }
    return ";".join(f"{k}={v}" for k, v in sorted(parts.items()))


class StoredSegmenter(SegmenterWrapper):
    """A segmenter whose ``encode`` first asks an :class:`EmbeddingStore`.

    ``decode`` passes through: it is cheap, and its answer depends on the prompts.

    Threads may share it (the annotator's background encoder and its request threads do):
    the store is locked, and a frame asked for while another thread encodes it waits for
    that encode instead of running the encoder a second time (on 2 cores a second encode
    would halve the speed of both); should that encode fail, each waiting thread tries
    once more itself, so one thread's failure is never another's.

    Args:
        inner: the segmenter (``encode``/``decode``).
        store: the embedding store of ``inner``'s model.
    """

    def __init__(self, inner: Any, store: EmbeddingStore) -> None:
        super().__init__(inner)
        self.store = store
        self.encodes = 0  # frames actually encoded (the rest came from the store)
        self._lock = threading.Lock()
        # Store key -> the encode in progress, for the threads that ask for it meanwhile.
        self._encoding: dict[str, Future] = {}

    def encode(self, image: np.ndarray) -> Any:
        key = self.store.key(image)
        embedding = self.store.cache.get(key)
        while embedding is None:
            with self._lock:
                running = self._encoding.get(key)
                mine: Future | None = None
                if running is None and key not in self.store.cache:
                    mine = self._encoding[key] = Future()
            if mine is not None:
                return self._encode_once(key, image, mine)
            if running is not None:
                if running.exception() is None:  # waits for the encode
                    return running.result()
                # It failed in its own thread, which reports it: this thread tries itself.
            # Stored between this thread's miss and its check: read it (None again only if
            # evicted meanwhile or the encode failed, and then this loop encodes it).
            embedding = self.store.cache.get(key)
        return embedding

    def _encode_once(self, key: str, image: np.ndarray, result: Future) -> Any:
        """Encode for every thread waiting on ``result``; stored before it is announced."""
        try:
            embedding = self.inner.encode(image)
            with self._lock:
                self.encodes += 1
            self.store.cache.put(key, embedding)
        except BaseException as exc:
            result.set_exception(exc)  # the waiting threads then encode themselves
            raise
        finally:
            with self._lock:
                del self._encoding[key]
        result.set_result(embedding)
        return embedding

    def decode_prompts(self, embedding: Any, prompts: DecodePrompts) -> MaskPrediction:
        return self.inner.decode(embedding, prompts)
