"""Segmenters shared by threads, the way the annotator shares one (issue 27).

The annotator's background thread encodes every frame of an upload while its request threads
decode clicks on stored embeddings and encode the frames they need, all through one
segmenter. Each test here runs that mix on a fresh segmenter (so what it builds on first use,
runners, compiled models, decoder sessions, traces, is built while the threads race for it):
one thread encodes frames in a loop, two or three others decode prompts on stored embeddings
and encode other frames at the same time. Nothing may raise, and every result must equal the
same call made alone in one thread on another instance, bit for bit (same backend, same
inputs: every runtime here gives a call the same kernels whatever else runs).

The model is the fan-in synthetic RepViT-SAM (``seeing_checkpoint``: embeddings depend on the
image, so a result computed from another call's buffers cannot pass) encoding at 256x256 so a
frame costs a fraction of a second; the predictor and ``OnnxSegmenter``, which always encode
at 1024x1024, use the one-convolution ``PatchEncoder`` stand-in with the same decoder.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from repvit_sam import ImageEmbedding, Sam, SamPredictor, build_repvit_sam
from repvit_sam.runtime import BackendSegmenter, GraphCache, OnnxSegmenter, backend_available
from repvit_sam.runtime.roi import RoiEmbedding, RoiSegmenter
from repvit_sam.segmenter import DecodePrompts, MaskPrediction, SegmenterWrapper
from tests.conftest import fan_in_state_dict
from tests.repvit_sam.test_backends import PatchEncoder

FRAME_HW = (96, 128)
MODE = "size256"  # the encoder sees 256x256: ~0.1-0.3 s a frame on 2 busy cores
# Results are recorded as (key, value); keys name the call: ("encode", i), ("decode", i, j).
Key = tuple


# --------------------------------------------------------------------------- the workload


def make_frames(count: int, seed: int) -> list[np.ndarray]:
    """Distinct (96, 128, 3) uint8 RGB frames: a moving square on noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(count):
        frame = rng.integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8)
        frame[20 + 4 * t : 60 + 4 * t, 30 + 6 * t : 70 + 6 * t] = (220, 40, 40)
        frames.append(frame)
    return frames


def make_prompts() -> list[DecodePrompts]:
    """Three prompt sets in frame pixels: 2 boxes; points with 3 candidates; box + logits."""
    logits = torch.from_numpy(
        np.random.default_rng(7).normal(0, 4, (1, 1, 256, 256)).astype(np.float32))
    return [
        DecodePrompts.of(boxes_xyxy=np.array([[30, 20, 70, 60], [5, 50, 120, 90]], np.float32)),
        DecodePrompts.of(points_xy=np.array([[[50, 40], [100, 80]]], np.float32),
                         point_labels=np.array([[1, 0]]), multimask_output=True),
        DecodePrompts.of(boxes_xyxy=np.array([[25, 15, 80, 70]], np.float32),
                         mask_logits=logits),
    ]


@dataclass
class Workload:
    """What the threads ask for: frames to encode, stored embeddings and prompts to decode."""

    frames: list[np.ndarray]
    stored: list[Any]  # embeddings computed beforehand, alone
    prompts: list[DecodePrompts]

    def decode_keys(self) -> list[Key]:
        return [("decode", i, j) for i in range(len(self.stored))
                for j in range(len(self.prompts))]


def workload(segmenter: Any, frames: list[np.ndarray], prompts: list[DecodePrompts]
             ) -> tuple[Workload, dict[Key, Any]]:
    """The frames encoded alone (the stored embeddings) and every decode made alone.

    Returns the workload and the results alone by key, the encodes' being the stored ones.
    """
    stored = [segmenter.encode(frame) for frame in frames]
    work = Workload(frames, stored, prompts)
    expected: dict[Key, Any] = {("encode", i): e for i, e in enumerate(stored)}
    return work, {**expected, **decoded_alone(segmenter, work)}


def decoded_alone(segmenter: Any, work: Workload) -> dict[Key, Any]:
    """Every decode of the workload made one after the other in this thread."""
    return {key: segmenter.decode(work.stored[key[1]], work.prompts[key[2]])
            for key in work.decode_keys()}


def shared(
    segmenter: Any,
    work: Workload,
    *,
    request_threads: int = 2,
    rounds: int = 2,
    request_encodes: bool = True,
    extra: Sequence[Callable[[], None]] = (),
) -> tuple[list[tuple[Key, Any]], list[str]]:
    """The annotator's mix on one segmenter; returns (results, errors as formatted text).

    A background thread encodes every frame ``rounds`` times; each request thread decodes
    every (stored embedding, prompt) pair, starting at its own offset, and encodes the frames
    in the reverse order between its decodes. ``extra`` callables run in threads of their own
    beside them. All threads start together, at a barrier.
    """
    results: list[tuple[Key, Any]] = []
    errors: list[str] = []
    barrier = threading.Barrier(1 + request_threads + len(extra))

    def guarded(body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                barrier.wait()
                body()
            except BaseException:  # every failure is reported by the test
                errors.append(traceback.format_exc())
        return run

    def background() -> None:
        for _ in range(rounds):
            for i, frame in enumerate(work.frames):
                results.append((("encode", i), segmenter.encode(frame)))

    def requests(offset: int) -> Callable[[], None]:
        def body() -> None:
            keys = work.decode_keys()
            keys = keys[offset % len(keys):] + keys[: offset % len(keys)]
            for step, key in enumerate(keys):
                results.append((key, segmenter.decode(work.stored[key[1]], work.prompts[key[2]])))
                if request_encodes and step % 2 == 0:
                    i = len(work.frames) - 1 - (step // 2) % len(work.frames)
                    results.append((("encode", i), segmenter.encode(work.frames[i])))
        return body

    bodies = [background, *(requests(3 * k + 1) for k in range(request_threads)), *extra]
    threads = [threading.Thread(target=guarded(body), name=f"worker-{n}")
               for n, body in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread is still running after 300 s"
    return results, errors


def same_embedding(actual: Any, expected: Any) -> bool:
    """Equal bit for bit: features and every size (ROI: crop and the inner embedding)."""
    if isinstance(expected, RoiEmbedding):
        return (isinstance(actual, RoiEmbedding) and actual.crop_xyxy == expected.crop_xyxy
                and same_embedding(actual.inner, expected.inner))
    assert isinstance(expected, ImageEmbedding)
    return (isinstance(actual, ImageEmbedding)
            and actual.features.dtype == expected.features.dtype
            and torch.equal(actual.features, expected.features)
            and (actual.orig_hw, actual.input_hw, actual.full_grid_hw)
            == (expected.orig_hw, expected.input_hw, expected.full_grid_hw))


def same_prediction(actual: MaskPrediction, expected: MaskPrediction) -> bool:
    """Equal bit for bit: IoU scores, low-res logits and full-size masks."""
    return (torch.equal(actual.iou_scores, expected.iou_scores)
            and torch.equal(actual.low_res_logits, expected.low_res_logits)
            and torch.equal(actual.masks, expected.masks))


def assert_as_alone(
    results: list[tuple[Key, Any]], errors: list[str], expected: dict[Key, Any]
) -> None:
    """No thread raised, and every result equals the call made alone."""
    assert not errors, f"{len(errors)} thread(s) raised; the first:\n{errors[0]}"
    assert results
    differ = []
    for key, value in results:
        same = same_embedding if key[0] == "encode" else same_prediction
        if not same(value, expected[key]):
            differ.append(key)
    assert not differ, f"{len(differ)} of {len(results)} results differ from alone: {differ[:8]}"
    assert {key for key, _ in results} == set(expected)  # every call was made


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def seeing_model() -> Sam:
    """RepViT-SAM with the suite's fan-in weights (those of ``seeing_checkpoint``)."""
    model = build_repvit_sam()
    model.load_state_dict(fan_in_state_dict(model))
    return model.eval()


@pytest.fixture(scope="module")
def graph_cache(seeing_model: Sam, tmp_path_factory: pytest.TempPathFactory) -> GraphCache:
    # Under the session's base folder with a fixed key, so every test module of the session
    # (tests/vos/test_segmenter_threads.py too) exports the graphs once.
    root = tmp_path_factory.getbasetemp() / "thread-graphs"
    return GraphCache(seeing_model, root=root, key="seeing")


@pytest.fixture(scope="module")
def patch_model(seeing_model: Sam) -> Sam:
    """SAM's geometry with a one-convolution encoder (1024x1024 encodes cost ~10 ms)."""
    torch.manual_seed(0)
    return Sam(PatchEncoder(), seeing_model.prompt_encoder, seeing_model.mask_decoder).eval()


def needs(*backends: str) -> None:
    for backend in backends:
        if not backend_available(backend):
            pytest.skip(f"{backend} is not installed")


def backend_segmenter(model: Sam, cache: GraphCache | None, backend: str, decoder: str,
                      variant: str = "channels_last", mode: str = MODE) -> BackendSegmenter:
    return BackendSegmenter(model, backend=backend, decoder_backend=decoder, mode=mode,
                            cache=cache, torch_variant=variant)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# --------------------------------------------------------------------------- the backends

# (encoder backend, decoder backend): OpenVINO with the torch batched decoder is the
# annotator's default (model.backend=auto); the graph decoders run on their own runtime.
BACKENDS = [
    ("openvino", "torch"),
    ("openvino", "openvino"),
    ("onnxruntime", "onnxruntime"),
    ("torch", "torch"),
]


@pytest.mark.parametrize(("backend", "decoder"), BACKENDS, ids=[f"{b}-{d}" for b, d in BACKENDS])
def test_backend_segmenter_shared_by_threads_gives_the_results_alone(
    seeing_model: Sam, graph_cache: GraphCache, backend: str, decoder: str
) -> None:
    needs(backend, decoder)
    reference = backend_segmenter(seeing_model, graph_cache, backend, decoder)
    work, expected = workload(reference, make_frames(2, seed=1), make_prompts())
    # The frames' embeddings differ: a result made from another call's buffers would show.
    assert rel_l2(work.stored[0].features, work.stored[1].features) > 1e-2
    # A fresh segmenter: its runners, compiled models and sessions are built under the race.
    segmenter = backend_segmenter(seeing_model, graph_cache, backend, decoder)
    results, errors = shared(segmenter, work)
    assert_as_alone(results, errors, expected)
    requests = getattr(segmenter.encoder_for(segmenter.mode.encoder_input_hw(FRAME_HW)),
                       "requests", None)
    if requests is not None:
        # OpenVINO: one request per call that overlapped others, never one per call.
        assert 1 <= requests.size <= 3


def test_jit_encoder_traced_once_under_the_race(patch_model: Sam) -> None:
    """The ``jit`` variant traces on first use: three threads asking at once get one trace."""
    reference = backend_segmenter(patch_model, None, "torch", "torch", "jit", mode="exact")
    work, expected = workload(reference, make_frames(2, seed=6), make_prompts())
    segmenter = backend_segmenter(patch_model, None, "torch", "torch", "jit", mode="exact")
    results, errors = shared(segmenter, work, request_threads=3)
    assert_as_alone(results, errors, expected)
    assert len(segmenter.encoder_for((1024, 1024))._traced) == 1


def test_predictor_video_pair_shared_by_threads_beside_set_image(patch_model: Sam) -> None:
    """``encode``/``decode`` in threads, while another thread converses through
    ``set_image``/``predict``: both give their results alone."""
    reference = SamPredictor(patch_model)
    frames = make_frames(3, seed=2)
    work, expected = workload(reference, frames[:2], make_prompts())
    box = np.array([30, 20, 70, 60])
    reference.set_image(frames[2])
    expected_predict = reference.predict(box=box, multimask_output=True)
    predictor = SamPredictor(patch_model)
    predicted: list[tuple[np.ndarray, ...]] = []

    def conversation() -> None:
        for frame in (frames[2], frames[0], frames[2]):
            predictor.set_image(frame)
            if frame is frames[2]:
                predicted.append(predictor.predict(box=box, multimask_output=True))

    results, errors = shared(predictor, work, extra=[conversation])
    assert_as_alone(results, errors, expected)
    assert len(predicted) == 2
    for outputs in predicted:
        for actual, wanted in zip(outputs, expected_predict, strict=True):
            np.testing.assert_array_equal(actual, wanted)


def test_onnx_segmenter_shared_by_threads(
    patch_model: Sam, graph_cache: GraphCache, tmp_path: Path
) -> None:
    needs("onnxruntime")
    encoder = GraphCache(patch_model, root=tmp_path, key="patch").encoder((1024, 1024))
    decoder = graph_cache.decoder()  # the same prompt encoder and mask decoder
    work, expected = workload(OnnxSegmenter(encoder, decoder), make_frames(2, seed=3),
                              make_prompts())
    results, errors = shared(OnnxSegmenter(encoder, decoder), work, request_threads=3)
    assert_as_alone(results, errors, expected)


class CountingSegmenter(SegmenterWrapper):
    """Passes every call through and counts the encodes."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.encodes = 0
        self._lock = threading.Lock()

    def encode(self, image: np.ndarray) -> Any:
        with self._lock:
            self.encodes += 1
        return self.inner.encode(image)


def test_roi_segmenter_shared_by_threads(seeing_model: Sam) -> None:
    """ROI serves one stream, so its encodes depend on the calls before them; shared anyway,
    each encode is the inner encode of the crop it chose, each decode (inside a crop or
    falling back to the whole frame) gives its result alone, and the counters add up."""

    def roi() -> RoiSegmenter:
        inner = BackendSegmenter(seeing_model, backend="torch", mode=MODE + "+nopad")
        return RoiSegmenter(CountingSegmenter(inner))

    reference = roi()
    frames = make_frames(2, seed=4)
    whole = reference.encode(frames[0])  # no boxes yet: the whole frame
    # The synthetic model's masks are too large to steer the crop: place it by the state.
    reference.load_stream_state({"roi.boxes": np.array([[30, 20, 50, 40]], np.float32),
                                 "roi.seen": np.zeros((0, 4), np.float32),
                                 "roi.has_seen": np.array(False)})
    cropped = reference.encode(frames[1])  # around that box
    assert whole.is_whole_frame and cropped.crop_xyxy == (8, 0, 72, 64)
    inside = DecodePrompts.of(boxes_xyxy=np.array([[40, 30, 60, 50]], np.float32))
    outside = DecodePrompts.of(boxes_xyxy=np.array([[90, 50, 125, 90]], np.float32))
    work = Workload(frames, [whole, cropped], [inside, outside])
    expected = decoded_alone(roi(), work)
    segmenter = roi()
    results, errors = shared(segmenter, work, rounds=1, request_threads=3,
                             request_encodes=False)
    encodes = [(key, value) for key, value in results if key[0] == "encode"]
    decodes = [(key, value) for key, value in results if key[0] == "decode"]
    assert_as_alone(decodes, errors, expected)
    assert len(encodes) == len(frames)
    for (_, i), embedding in encodes:
        x0, y0, x1, y1 = embedding.crop_xyxy
        wanted = reference.inner.encode(np.ascontiguousarray(frames[i][y0:y1, x0:x1]))
        assert same_embedding(embedding.inner, wanted), (i, embedding.crop_xyxy)
    # Every encode counted once, whether a frame's or a decode's whole-frame fallback.
    assert segmenter.crop_encodes + segmenter.whole_encodes == segmenter.inner.encodes
    assert segmenter.inner.encodes > len(encodes)  # the fallbacks encoded too
    state = segmenter.stream_state()
    assert state["roi.boxes"].shape[1:] == (4,) and state["roi.seen"].shape[1:] == (4,)


# --------------------------------------------------------------------------- first use


def test_two_caches_exporting_one_graph_at_once_write_it_once(
    patch_model: Sam, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two threads (each with its own GraphCache over one folder) ask for a graph that is
    not exported yet: one exports it, the other waits and reads the whole file."""
    needs("onnxruntime")
    import onnx

    caches = [GraphCache(patch_model, root=tmp_path, key="k") for _ in range(2)]
    barrier = threading.Barrier(2)
    paths: list[Path] = []
    errors: list[str] = []

    def ask(cache: GraphCache) -> None:
        try:
            barrier.wait()
            paths.append(cache.decoder())
        except BaseException:
            errors.append(traceback.format_exc())

    with caplog.at_level(logging.WARNING, logger="repvit_sam.runtime.graphs"):
        threads = [threading.Thread(target=ask, args=(cache,)) for cache in caches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors[0]
    assert len(paths) == 2 and paths[0] == paths[1]
    onnx.checker.check_model(onnx.load(str(paths[0])), full_check=True)
    assert [r.message for r in caplog.records].count(
        f"exporting {paths[0]} (first use of this model and frame size; cached)") == 1
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [paths[0].name]  # no temp


def test_first_encodes_in_threads_build_one_cache_and_one_runner(
    patch_model: Sam, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A BackendSegmenter that builds its graph cache itself, asked by three threads at once
    before anything is built: one export, one runner, the results alone."""
    needs("onnxruntime")
    monkeypatch.setenv("REPVIT_VOS_CACHE", str(tmp_path))
    frames = make_frames(3, seed=5)
    segmenter = BackendSegmenter(patch_model, backend="onnxruntime")
    embeddings: dict[int, Any] = {}
    errors: list[str] = []
    barrier = threading.Barrier(3)

    def first(i: int) -> None:
        try:
            barrier.wait()
            embeddings[i] = segmenter.encode(frames[i])
        except BaseException:
            errors.append(traceback.format_exc())

    with caplog.at_level(logging.WARNING, logger="repvit_sam.runtime.graphs"):
        threads = [threading.Thread(target=first, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors[0]
    assert sum("exporting" in r.message for r in caplog.records) == 1
    assert len(segmenter._encoders) == 1
    reference = BackendSegmenter(patch_model, backend="onnxruntime")
    for i, frame in enumerate(frames):
        assert same_embedding(embeddings[i], reference.encode(frame)), i
