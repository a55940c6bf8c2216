"""The official segment-anything 1.0 package beside ``repvit_sam``, for comparisons.

``vos.bench --only amg`` times both automatic mask generators on one image and one set of
weights, and ``tests/repvit_sam/test_compat_official.py`` compares their outputs; both import
the official package through :func:`official_segment_anything`.

The torchvision stand-in. segment-anything imports four torchvision functions: ``resize`` and
``to_pil_image`` (``utils/transforms.py``, to resize the image) and ``batched_nms`` and
``box_area`` (``automatic_mask_generator.py``, NMS). This project installs the CPU build of
PyTorch, beside which PyPI's torchvision cannot load its compiled ``nms`` operator ('operator
torchvision::nms does not exist'). When a working torchvision is importable it is used;
otherwise a stand-in module named ``torchvision`` is put into ``sys.modules`` for the duration
of the ``with`` block only, with plain-PyTorch/PIL versions of exactly those four functions,
written from torchvision's documented behaviour:

- ``to_pil_image(ndarray)``: a floating array is multiplied by 255 and cast to uint8, then
  wrapped as an RGB PIL image;
- ``resize(pil_image, (h, w))``: PIL's bilinear resize to (w, h) (torchvision's path for PIL
  inputs, antialiased by PIL itself);
- ``batched_nms(boxes, scores, idxs, iou_threshold)``: greedy NMS per category in descending
  score order, ties kept in input order, an IoU without +1 areas and suppression when
  IoU > threshold; the kept indices come out in descending score order. That is torchvision's
  path for up to 1000 boxes on the CPU (one NMS pass, whose kernel sorts stably). For more
  boxes torchvision runs NMS per category and re-sorts the kept boxes with PyTorch's unstable
  sort, so masks with equal scores may come out in another order there; SAM's generator then
  depends on that sort's tie order, which repvit_sam (a stable order) does not copy;
- ``box_area(boxes)``: (x1 - x0) * (y1 - y0).

The stand-in's NMS is written independently of ``repvit_sam.utils.amg.batched_nms`` (one IoU
row per kept box, not our chunked IoU matrix and boolean pass), so an output comparison does
not check our NMS against itself. It is slower than torchvision's compiled kernel, so timings
of the official generator leave the stand-in's NMS seconds out (:data:`NMS_SECONDS`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import torch

OFFICIAL = "segment_anything"
# Seconds spent in the stand-in's batched_nms since the last reset (timings subtract them).
NMS_SECONDS = [0.0]


def _stand_in_to_pil_image(pic: np.ndarray, mode: str | None = None) -> Any:
    from PIL import Image

    pic = np.asarray(pic)
    if np.issubdtype(pic.dtype, np.floating) and mode != "F":
        pic = (pic * 255).astype(np.uint8)
    return Image.fromarray(pic, mode=mode)


def _stand_in_resize(img: Any, size: list[int] | tuple[int, int], *_: Any) -> Any:
    from PIL import Image

    height, width = size
    return img.resize((width, height), Image.Resampling.BILINEAR)


def _stand_in_box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _stand_in_batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    start = time.perf_counter()
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes, idxs = boxes[order], idxs[order]
    areas = _stand_in_box_area(boxes)
    alive = torch.ones(len(order), dtype=torch.bool)
    keep = []
    for rank in range(len(order)):
        if not alive[rank]:
            continue
        keep.append(rank)
        # IoU of this kept box with every later one, one row at a time.
        later = boxes[rank + 1 :]
        top_left = torch.maximum(boxes[rank, :2], later[:, :2])
        bottom_right = torch.minimum(boxes[rank, 2:], later[:, 2:])
        inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
        iou = inter / (areas[rank] + areas[rank + 1 :] - inter)
        alive[rank + 1 :] &= ~((iou > iou_threshold) & (idxs[rank + 1 :] == idxs[rank]))
    kept = order[torch.as_tensor(keep, dtype=torch.int64)]
    NMS_SECONDS[0] += time.perf_counter() - start
    return kept


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    modules = {
        name: types.ModuleType(name)
        for name in (
            "torchvision",
            "torchvision.transforms",
            "torchvision.transforms.functional",
            "torchvision.ops",
            "torchvision.ops.boxes",
        )
    }
    functional = modules["torchvision.transforms.functional"]
    functional.resize = _stand_in_resize  # type: ignore[attr-defined]
    functional.to_pil_image = _stand_in_to_pil_image  # type: ignore[attr-defined]
    boxes = modules["torchvision.ops.boxes"]
    boxes.batched_nms = _stand_in_batched_nms  # type: ignore[attr-defined]
    boxes.box_area = _stand_in_box_area  # type: ignore[attr-defined]
    # Parent packages expose their submodules as attributes, as after a real import.
    for name, module in modules.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    return modules


def _real_torchvision_works() -> bool:
    try:
        from torchvision.ops import boxes

        boxes.batched_nms(torch.zeros(1, 4), torch.ones(1), torch.zeros(1), 0.5)
    except Exception:  # any failure (ImportError, a missing operator) means the stand-in
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False
    return True


def official_installed() -> bool:
    """Whether ``segment_anything`` can be imported (``pip install segment-anything``)."""
    return importlib.util.find_spec(OFFICIAL) is not None


@contextlib.contextmanager
def official_segment_anything() -> Iterator[types.ModuleType]:
    """Import the official ``segment_anything`` (with all submodules) for the ``with`` block.

    Afterwards every module the block added to ``sys.modules`` (segment_anything, the
    torchvision stand-in) is removed again.

    Raises:
        ModuleNotFoundError: segment-anything is not installed.
    """
    if not official_installed():
        raise ModuleNotFoundError("segment-anything is not installed (pip install -e '.[dev]')")
    before = set(sys.modules)
    try:
        if not _real_torchvision_works():
            sys.modules.update(_torchvision_stand_in())
        package = importlib.import_module(OFFICIAL)
        for sub in ("modeling", "utils.amg", "utils.transforms", "utils.onnx"):
            importlib.import_module(f"{OFFICIAL}.{sub}")
        yield package
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] in (OFFICIAL, "torchvision"):
                del sys.modules[name]


def uses_torchvision_stand_in() -> bool:
    """Whether the official package currently runs on the stand-in (inside the block)."""
    return getattr(sys.modules.get("torchvision"), "__file__", None) is None


def small_vit_sam(modeling: types.ModuleType) -> torch.nn.Module:
    """SAM with a 2-block, 64-wide ViT encoder (one windowed block, one global), built from
    ``modeling``'s public classes with SAM's ViT settings otherwise (1024 input, 16 px
    patches, relative positions, 14 px windows), and SAM's prompt encoder and mask decoder.

    The same code paths as ViT-B at a fraction of the cost (~0.2 s an image instead of ~20 s
    on 2 cores): the prompt decoder and every post-processing step are SAM's own.
    """
    encoder = modeling.ImageEncoderViT(
        depth=2,
        embed_dim=64,
        img_size=1024,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=2,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=(1,),
        window_size=14,
        out_chans=256,
    )
    prompt_encoder = modeling.PromptEncoder(
        embed_dim=256,
        image_embedding_size=(64, 64),
        input_image_size=(1024, 1024),
        mask_in_chans=16,
    )
    mask_decoder = modeling.MaskDecoder(
        num_multimask_outputs=3,
        transformer=modeling.TwoWayTransformer(
            depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8
        ),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return modeling.Sam(
        image_encoder=encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def bench_amg(report: Any, image: np.ndarray, *, points_per_side: int = 32,
              repeats: int = 1) -> None:
    """Time our automatic mask generator against the official one (``report.amg`` rows).

    Both get the same small-ViT SAM (:func:`small_vit_sam`, PyTorch's seeded default
    initialisation copied into both) and the same RGB image, with SAM's default settings
    except that the quality thresholds are off (random weights would pass almost no mask),
    so both post-process every proposal. The official time leaves out the stand-in's NMS
    seconds (see the module docstring); ours includes its own NMS.
    """
    import repvit_sam

    if not official_installed():
        report.notes.append("amg: segment-anything is not installed, nothing to compare")
        return
    settings = {"points_per_side": points_per_side, "pred_iou_thresh": 0.0,
                "stability_score_thresh": 0.0}
    with official_segment_anything() as official:
        torch.manual_seed(0)
        ours_model = small_vit_sam(repvit_sam.modeling)
        official_model = small_vit_sam(official.modeling)
        official_model.load_state_dict(ours_model.state_dict())
        generators = {
            "repvit_sam": repvit_sam.SamAutomaticMaskGenerator(ours_model, **settings),
            "segment_anything 1.0": official.SamAutomaticMaskGenerator(official_model,
                                                                       **settings),
        }
        seconds: dict[str, list[float]] = {name: [] for name in generators}
        counts: dict[str, int] = {}
        for _ in range(repeats):
            for name, generator in generators.items():  # interleaved, side by side
                NMS_SECONDS[0] = 0.0
                start = time.perf_counter()
                with torch.inference_mode():
                    counts[name] = len(generator.generate(image))
                seconds[name].append(time.perf_counter() - start - NMS_SECONDS[0])
        stand_in = uses_torchvision_stand_in()
    ours_s = statistics.median(seconds["repvit_sam"])
    for name, values in seconds.items():
        report.amg.append({
            "implementation": name, "image": f"{image.shape[1]}x{image.shape[0]}",
            "points": points_per_side ** 2, "masks": counts[name],
            "seconds": round(statistics.median(values), 2),
            "vs_repvit_sam": round(statistics.median(values) / ours_s, 2),
        })
    if stand_in:
        report.notes.append("amg: the official generator ran on the torchvision stand-in of "
                            "vos/bench/official_sam.py; its NMS seconds are left out")
