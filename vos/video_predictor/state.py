"""One video's session: typed fields for the predictor, SAM 2's dict keys for SAM 2 code.

:class:`InferenceState` is what ``init_state`` returns. The predictor works on its typed
attributes (prompts, prompted results, pass records, kept tracker states). Code written for
SAM 2 reads the same session through SAM 2's ``inference_state`` keys: the state *is* a
``dict`` (so ``isinstance(state, dict)`` checks pass), whose SAM 2 keys hold live views of the
session, made from the typed fields when read. Which keys exist, their types, which are
read-only and what writing does is documented on :class:`InferenceState`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from repvit_sam.segmenter import ImageEmbedding
from vos.embedding_store import SpillCache
from vos.io.resume_state import snapshot_from_bytes
from vos.types import Track
from vos.video_predictor.frames import FrameImages, FrameReader
from vos.video_predictor.outputs import IMAGE_SIZE, NO_OBJ_SCORE

__all__ = ["BACKWARD", "FORWARD", "InferenceState", "ObjectPrompts", "PassRecord"]

FORWARD, BACKWARD = "forward", "backward"
# SAM 2's low-res mask size (its ``pred_masks``): a quarter of the model input, per side.
LOW_RES = IMAGE_SIZE // 4

# The keys of sam2 1.1.0's inference_state, and 1.0's frames_already_tracked.
SAM2_KEYS = (
    "images", "num_frames", "offload_video_to_cpu", "offload_state_to_cpu", "video_height",
    "video_width", "device", "storage_device", "point_inputs_per_obj", "mask_inputs_per_obj",
    "cached_features", "constants", "obj_id_to_idx", "obj_idx_to_id", "obj_ids",
    "output_dict_per_obj", "temp_output_dict_per_obj", "frames_tracked_per_obj",
    "frames_already_tracked",
)
_HOW_TO_CHANGE = ("change the session with the predictor's methods (add_new_points_or_box, "
                  "add_new_mask, clear_all_prompts_in_frame, remove_object, reset_state)")


@dataclass
class ObjectPrompts:
    """The prompts of one object on one frame (video pixels).

    Attributes:
        points_xy: (P, 2) float32 XY in video pixels, or None.
        point_labels: (P,) int64, 1 positive / 0 negative, or None.
        box_xyxy: (4,) float32 XYXY in video pixels, or None.
        mask: (H, W) bool at the video's resolution, or None.
    """

    points_xy: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    box_xyxy: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclass
class PassRecord:
    """What one direction's passes left: a state per frame, and how far it is valid.

    Frames are counted in the pass's own time: ``u = t`` forward, ``u = N - 1 - t`` backward,
    so both directions run "forward in u". States of frames ``u < valid_end`` were computed
    under the current prompts, without gaps from the pass's first prompted frame.

    Attributes:
        direction: FORWARD or BACKWARD.
        valid_end: see above.
        frames: frames t with a kept state.
        tracks_at: frame t -> the tracker ids (ACTIVE or LOST) in its kept state.
    """

    direction: str
    valid_end: int = 0
    frames: set[int] = field(default_factory=set)
    tracks_at: dict[int, frozenset[int]] = field(default_factory=dict)


class SessionOwner(Protocol):
    """What the views ask of the predictor that made the state."""

    def _frame_logits(self, state: InferenceState, frame_idx: int) -> torch.Tensor: ...

    def _outputs(self, state: InferenceState, frame_idx: int,
                 obj_ids: list[Any]) -> dict[Any, Track | None]: ...

    def _has_embedding(self, state: InferenceState, frame_idx: int) -> bool: ...

    def _stored_embedding(self, state: InferenceState,
                          frame_idx: int) -> ImageEmbedding | None: ...


# ---------------------------------------------------------------------- read-only containers
def _read_only(what: str) -> Callable[..., NoReturn]:
    def refuse(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{what} is a read-only view of the session; {_HOW_TO_CHANGE}")

    return refuse


class LiveList(list):  # type: ignore[type-arg]
    """A ``list`` the predictor keeps up to date and callers only read (``obj_ids``)."""

    append = extend = insert = remove = pop = clear = sort = reverse = _read_only(
        "inference_state['obj_ids']")
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only("inference_state['obj_ids']")

    def _replace(self, items: list[Any]) -> None:
        list.clear(self)
        list.extend(self, items)

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))  # a copy is a plain list


class LiveDict(dict):  # type: ignore[type-arg]
    """A ``dict`` the predictor keeps up to date and callers only read (the id maps)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"inference_state[{self._name!r}] is a read-only view of the "
                        f"session; {_HOW_TO_CHANGE}")

    __setitem__ = __delitem__ = pop = popitem = clear = update = setdefault = __ior__ = _refuse

    def _replace(self, items: Mapping[Any, Any]) -> None:
        dict.clear(self)
        dict.update(self, items)

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))  # a copy is a plain dict


class _View(Mapping[Any, Any]):
    """A read-only mapping computed from the session when read (never stored)."""

    def __repr__(self) -> str:
        # Values may be costly (outputs, tensors): the keys say what is there.
        return f"<{type(self).__name__} of keys {list(self)}>"


class _PerObject(_View):
    """obj_idx -> ``make(obj_id)``, over the session's current objects."""

    def __init__(self, state: InferenceState, make: Callable[[Any], Any]) -> None:
        self._state = state
        self._make = make

    def __len__(self) -> int:
        return len(self._state.obj_ids)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self._state.obj_ids)))

    def __getitem__(self, obj_idx: Any) -> Any:
        ids = self._state.obj_ids
        if isinstance(obj_idx, bool) or not isinstance(obj_idx, int) or \
                not 0 <= obj_idx < len(ids):
            raise KeyError(obj_idx)
        return self._make(ids[obj_idx])


class _PerFrame(_View):
    """frame_idx -> a value: the frames ``frames()`` lists (sorted), ``has(t)`` tells one
    frame without listing them all, ``value(t)`` is made when read."""

    def __init__(self, frames: Callable[[], list[int]], has: Callable[[int], bool],
                 value: Callable[[int], Any]) -> None:
        self._frames = frames
        self._has = has
        self._value = value

    def __len__(self) -> int:
        return len(self._frames())

    def __iter__(self) -> Iterator[int]:
        return iter(self._frames())

    def __contains__(self, frame_idx: object) -> bool:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, int | np.integer):
            return False
        return self._has(int(frame_idx))

    def __getitem__(self, frame_idx: Any) -> Any:
        if frame_idx not in self:
            raise KeyError(frame_idx)
        return self._value(int(frame_idx))


# ---------------------------------------------------------------------- the state
class InferenceState(dict):  # type: ignore[type-arg]
    """Everything one video's session holds: typed fields, and SAM 2's ``inference_state``.

    The typed attributes are what the predictor works on (below). As a ``dict`` it holds SAM
    2.1's keys (and 1.0's ``frames_already_tracked``), each a live view of the session:

    ======================== ============================================================
    key                      value (read-only unless said)
    ======================== ============================================================
    num_frames, video_height ints, fixed at ``init_state``
    video_width
    images                   :class:`FrameImages`: ``images[t]`` is frame t as SAM 2's
                             (3, 1024, 1024) float32 normalised input, made when read
    device                   the model's device at ``init_state`` (outputs go there)
    storage_device           ``cpu``: kept states live in CPU memory or on disk
    offload_video_to_cpu,    the flags given to ``init_state`` (the first puts ``images``
    offload_state_to_cpu     on the CPU; states stay on the CPU anyway)
    obj_ids                  ``list`` of obj_ids in order of addition (obj_idx = position)
    obj_id_to_idx,           ``dict``\\ s between obj_id and obj_idx
    obj_idx_to_id
    point_inputs_per_obj     obj_idx -> frame -> ``{"point_coords": (1, P, 2) float32,
                             "point_labels": (1, P) int32}`` in SAM 2's form: coordinates
                             scaled to the 1024 input, a box as its two corners first
                             with labels 2 and 3
    mask_inputs_per_obj      obj_idx -> frame -> (1, 1, 1024, 1024) float32 0/1 mask
    output_dict_per_obj      obj_idx -> ``{"cond_frame_outputs": frame -> out,
                             "non_cond_frame_outputs": frame -> out}``: prompted frames,
                             and frames a pass gave the object; ``out`` is
                             ``{"pred_masks": (1, 1, 256, 256) float32 logits over the
                             whole frame, "object_score_logits": (1, 1), +1 seen / -1
                             not}`` (SAM 2's memory features have no counterpart here)
    temp_output_dict_per_obj obj_idx -> both dicts empty: a prompt's result is final at
                             once, nothing waits to be merged before a propagation
    frames_tracked_per_obj   obj_idx -> frame -> ``{"reverse": bool}``: the frames whose
                             output came from a pass, and that pass's direction
    frames_already_tracked   frame -> ``{"reverse": bool}`` over every object (SAM 2 1.0)
    cached_features          frame -> ``(image (1, 3, 1024, 1024), ImageEmbedding)`` for
                             the frames of this session whose embedding the store holds
    constants                a plain ``dict`` the predictor never reads (writable)
    ======================== ============================================================

    The per-object and per-frame views are read-only ``Mapping``\\ s computed when read.
    ``obj_ids`` is a ``list`` and the id maps ``dict``\\ s, read-only too, updated in place
    when objects change (SAM 2 replaces them): a view held from before a change shows it.
    SAM 2's keys cannot be assigned or deleted (``TypeError``; change the session with the
    predictor's methods).
    Other keys may be added, changed and deleted freely: the predictor ignores them, as
    SAM 2 ignores a key it does not know. The state cannot be pickled or copied (it holds
    an open video); ``dict(state)`` gives a plain dict of the same views.

    Attributes:
        video_path: what ``init_state`` opened.
        frames: lazy random access to the frames.
        num_frames, video_height, video_width: the video's size.
        states: per-frame tracker states (key ``"<direction>:<frame_idx>"``).
        device: the model's device at ``init_state``.
        obj_ids: user object ids, in the order they were added (obj_idx = position); the
            predictor's own list (SAM 2's ``obj_ids`` key is a read-only copy of it, brought
            up to date by :meth:`sync`).
        track_ids: user obj_id -> the tracker's id (1, 2, ... in order of addition).
        prompts: frame_idx -> obj_id -> the prompts given there.
        prompted: frame_idx -> obj_id -> the decoded prompted result (a tracker Track).
        passes: the forward and backward pass records.
        visited: frames whose embedding this session computed or read from the store.
    """

    def __init__(self, *, owner: SessionOwner, video_path: str, frames: FrameReader,
                 video_height: int, video_width: int, states: SpillCache[bytes],
                 device: torch.device, offload_video_to_cpu: bool = False,
                 offload_state_to_cpu: bool = False, settings_epoch: int = 0) -> None:
        super().__init__()
        self.owner = owner
        self.video_path = video_path
        self.frames = frames
        self.num_frames = frames.num_frames
        self.video_height = int(video_height)
        self.video_width = int(video_width)
        self.states = states
        self.device = device
        self.obj_ids: list[Any] = []
        self.track_ids: dict[Any, int] = {}
        self.next_track_id = 1
        self.prompts: dict[int, dict[Any, ObjectPrompts]] = {}
        self.prompted: dict[int, dict[Any, Track]] = {}
        self.passes = {FORWARD: PassRecord(FORWARD), BACKWARD: PassRecord(BACKWARD)}
        self.visited: set[int] = set()
        self.settings_epoch = settings_epoch
        # SAM 2's obj_ids and id maps: read-only copies of ``obj_ids``, brought up to date
        # whenever the state is read as a mapping and after every predictor call.
        self._ids_view = LiveList()
        self._id_to_idx = LiveDict("obj_id_to_idx")
        self._idx_to_id = LiveDict("obj_idx_to_id")
        views: dict[str, Any] = {
            "images": FrameImages(frames, torch.device("cpu") if offload_video_to_cpu
                                  else device, IMAGE_SIZE),
            "num_frames": self.num_frames,
            "offload_video_to_cpu": bool(offload_video_to_cpu),
            "offload_state_to_cpu": bool(offload_state_to_cpu),
            "video_height": self.video_height,
            "video_width": self.video_width,
            "device": device,
            "storage_device": torch.device("cpu"),
            "point_inputs_per_obj": _PerObject(self, self._point_inputs),
            "mask_inputs_per_obj": _PerObject(self, self._mask_inputs),
            "cached_features": _PerFrame(
                self._cached_frames,
                lambda t: t in self.visited and self.owner._has_embedding(self, t),
                self._cached_features),
            "constants": {},
            "obj_id_to_idx": self._id_to_idx,
            "obj_idx_to_id": self._idx_to_id,
            "obj_ids": self._ids_view,
            "output_dict_per_obj": _PerObject(self, self._output_dict),
            "temp_output_dict_per_obj": _PerObject(self, self._temp_output_dict),
            "frames_tracked_per_obj": _PerObject(self, self._frames_tracked),
            "frames_already_tracked": _PerFrame(
                lambda: sorted(self._tracked_any()),
                lambda t: self._reverse_at(t) is not None,
                lambda t: {"reverse": self._reverse_at(t)}),
        }
        assert tuple(views) == SAM2_KEYS
        dict.update(self, views)

    # ------------------------------------------------------------------ objects
    def add_object(self, obj_id: Any) -> int:
        """Register a new object (the next tracker id); returns its tracker id."""
        track_id = self.next_track_id
        self.track_ids[obj_id] = track_id
        self.next_track_id += 1
        self.obj_ids.append(obj_id)
        self.sync()
        return track_id

    def drop_object(self, obj_id: Any) -> None:
        """Forget an object's id (its prompts are the caller's to drop)."""
        del self.track_ids[obj_id]
        self.obj_ids.remove(obj_id)
        self.sync()

    def forget_objects(self) -> None:
        """Forget every object, prompt, prompted result and kept state (``reset_state``)."""
        self.obj_ids.clear()
        self.track_ids.clear()
        self.next_track_id = 1
        self.prompts.clear()
        self.prompted.clear()
        self.states.clear()
        self.passes = {FORWARD: PassRecord(FORWARD), BACKWARD: PassRecord(BACKWARD)}
        self.sync()

    def sync(self) -> None:
        """Bring SAM 2's ``obj_ids`` list and id maps up to date with :attr:`obj_ids`."""
        if list.__eq__(self._ids_view, self.obj_ids):
            return
        self._ids_view._replace(list(self.obj_ids))
        self._id_to_idx._replace({obj_id: idx for idx, obj_id in enumerate(self.obj_ids)})
        self._idx_to_id._replace(dict(enumerate(self.obj_ids)))

    def first_prompt(self, obj_id: Any) -> int | None:
        """The earliest frame holding a prompt of ``obj_id`` (None without one)."""
        frames = [t for t, objs in self.prompted.items() if obj_id in objs]
        return min(frames) if frames else None

    def kept_tracks(self, direction: str, frame_idx: int) -> frozenset[int]:
        """The tracker ids (ACTIVE or LOST) in the kept state of one direction and frame
        (empty without one); read from the state once, then remembered."""
        record = self.passes[direction]
        ids = record.tracks_at.get(frame_idx)
        if ids is None:
            ids = frozenset()
            data = self.states.get(f"{direction}:{frame_idx}") \
                if frame_idx in record.frames else None
            if data is not None:
                snapshot = snapshot_from_bytes(data, f"{direction} state of frame {frame_idx}")
                ids = frozenset(snapshot.tracker.tracks)
                record.tracks_at[frame_idx] = ids
        return ids

    def output_direction(self, obj_id: Any, frame_idx: int) -> str | None:
        """Which pass gives ``obj_id``'s output on a frame without its prompt: FORWARD on and
        after its first prompted frame when the forward pass kept it there, else BACKWARD
        when the backward pass did; None when neither did."""
        first = self.first_prompt(obj_id)
        if first is None:
            return None
        track_id = self.track_ids[obj_id]
        for direction in (FORWARD, BACKWARD) if frame_idx >= first else (BACKWARD,):
            if track_id in self.kept_tracks(direction, frame_idx):
                return direction
        return None

    def tracked_frames(self, obj_id: Any) -> dict[int, str]:
        """frame_idx -> the direction of the pass that gave ``obj_id``'s output there."""
        frames = sorted(set().union(*(r.frames for r in self.passes.values())))
        out = {}
        for t in frames:
            direction = self.output_direction(obj_id, t)
            if direction is not None:
                out[t] = direction
        return out

    # ------------------------------------------------------------------ SAM 2's keys
    def __getitem__(self, key: Any) -> Any:
        self.sync()
        return dict.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        self.sync()
        return dict.get(self, key, default)

    def __iter__(self) -> Iterator[Any]:
        # Defined here so that dict(state) and {**state} read through __getitem__.
        return dict.__iter__(self)

    def items(self) -> Any:
        self.sync()
        return dict.items(self)

    def values(self) -> Any:
        self.sync()
        return dict.values(self)

    def __missing__(self, key: Any) -> NoReturn:
        raise KeyError(f"{key!r}: not a key of this inference state (SAM 2's keys: "
                       f"{', '.join(SAM2_KEYS)})")

    def __setitem__(self, key: Any, value: Any) -> None:
        if key in SAM2_KEYS:
            raise TypeError(f"inference_state[{key!r}] cannot be replaced: it is a view of the "
                            f"session; {_HOW_TO_CHANGE}")
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        if key in SAM2_KEYS:
            raise TypeError(f"inference_state[{key!r}] cannot be deleted: it is one of SAM "
                            "2's keys of the session")
        dict.__delitem__(self, key)

    def pop(self, key: Any, *default: Any) -> Any:
        if key in SAM2_KEYS:
            self.__delitem__(key)
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[Any, Any]:
        if not self or next(reversed(self.keys())) in SAM2_KEYS:
            raise TypeError("inference_state.popitem() would delete one of SAM 2's keys")
        return dict.popitem(self)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> InferenceState:  # type: ignore[override,misc]
        self.update(other)
        return self

    def clear(self) -> NoReturn:
        raise TypeError("inference_state.clear() would delete SAM 2's keys; to forget every "
                        "object and prompt call predictor.reset_state(inference_state)")

    def __reduce__(self) -> NoReturn:
        raise TypeError("an inference state cannot be pickled or copied: it holds an open "
                        "video and the session's kept states; call init_state again")

    def __repr__(self) -> str:
        return (f"InferenceState({self.video_path!r}, {self.num_frames} frames of "
                f"{self.video_width}x{self.video_height}, obj_ids={list(self.obj_ids)})")

    # ------------------------------------------------------------------ view values
    def _has_prompt(self, obj_id: Any, kind: str, frame_idx: int) -> bool:
        """Whether ``obj_id`` has a prompt of ``kind`` ("mask" or "points") on a frame."""
        prompts = self.prompts.get(frame_idx, {}).get(obj_id)
        return prompts is not None and (prompts.mask is not None) == (kind == "mask")

    def _prompt_view(self, obj_id: Any, kind: str, value: Callable[[int], Any]) -> _PerFrame:
        return _PerFrame(lambda: sorted(t for t in self.prompts
                                        if self._has_prompt(obj_id, kind, t)),
                         lambda t: self._has_prompt(obj_id, kind, t), value)

    def _point_inputs(self, obj_id: Any) -> _PerFrame:
        def value(t: int) -> dict[str, torch.Tensor]:
            prompts = self.prompts[t][obj_id]
            coords, labels = [], []
            if prompts.box_xyxy is not None:
                coords.append(prompts.box_xyxy.reshape(2, 2))
                labels.append(np.array([2, 3]))
            if prompts.points_xy is not None:
                coords.append(prompts.points_xy)
                labels.append(np.asarray(prompts.point_labels))
            scale = np.array([IMAGE_SIZE / self.video_width, IMAGE_SIZE / self.video_height])
            xy = np.concatenate(coords) * scale
            return {"point_coords": torch.tensor(xy[None], dtype=torch.float32,
                                                 device=self.device),
                    "point_labels": torch.tensor(np.concatenate(labels)[None],
                                                 dtype=torch.int32, device=self.device)}

        return self._prompt_view(obj_id, "points", value)

    def _mask_inputs(self, obj_id: Any) -> _PerFrame:
        def value(t: int) -> torch.Tensor:
            mask = torch.from_numpy(self.prompts[t][obj_id].mask)[None, None].float()  # type: ignore[arg-type]
            # SAM 2 resizes a mask prompt to its input size this way (antialiased bilinear,
            # then >= 0.5).
            resized = F.interpolate(mask, (IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                                    align_corners=False, antialias=True)
            return (resized >= 0.5).float().to(self.device)

        return self._prompt_view(obj_id, "mask", value)

    def _output_dict(self, obj_id: Any) -> LiveDict:
        def prompted(t: int) -> bool:
            return obj_id in self.prompted.get(t, {})

        def tracked(t: int) -> bool:
            return not prompted(t) and self.output_direction(obj_id, t) is not None

        def value(t: int) -> dict[str, torch.Tensor]:
            row = self.obj_ids.index(obj_id)
            logits = self.owner._frame_logits(self, t)[row : row + 1].cpu()
            present = bool((logits > 0).any())
            if present:
                low = F.interpolate(logits, (LOW_RES, LOW_RES), mode="bilinear",
                                    align_corners=False)
            else:
                low = torch.full((1, 1, LOW_RES, LOW_RES), NO_OBJ_SCORE)
            return {"pred_masks": low,
                    "object_score_logits": torch.tensor([[1.0 if present else -1.0]])}

        out = LiveDict("output_dict_per_obj")
        out._replace({
            "cond_frame_outputs": _PerFrame(
                lambda: sorted(t for t in self.prompted if prompted(t)), prompted, value),
            "non_cond_frame_outputs": _PerFrame(
                lambda: [t for t in self.tracked_frames(obj_id) if not prompted(t)],
                tracked, value)})
        return out

    @staticmethod
    def _temp_output_dict(obj_id: Any) -> LiveDict:
        out = LiveDict("temp_output_dict_per_obj")
        nothing = _PerFrame(list, lambda t: False, lambda t: None)  # empty views
        out._replace({"cond_frame_outputs": nothing, "non_cond_frame_outputs": nothing})
        return out

    def _frames_tracked(self, obj_id: Any) -> _PerFrame:
        return _PerFrame(lambda: sorted(self.tracked_frames(obj_id)),
                         lambda t: self.output_direction(obj_id, t) is not None,
                         lambda t: {"reverse": self.output_direction(obj_id, t) == BACKWARD})

    def _reverse_at(self, frame_idx: int) -> bool | None:
        """Whether every object's output on a frame came from a backward pass (None: no
        object's came from a pass)."""
        directions = {self.output_direction(o, frame_idx) for o in self.obj_ids} - {None}
        return directions == {BACKWARD} if directions else None

    def _tracked_any(self) -> dict[int, bool]:
        """frame_idx -> reverse, for the frames a pass gave any current object."""
        frames = sorted(set().union(*(r.frames for r in self.passes.values())))
        out = {}
        for t in frames:
            reverse = self._reverse_at(t)
            if reverse is not None:
                out[t] = reverse
        return out

    def _cached_frames(self) -> list[int]:
        return [t for t in sorted(self.visited) if self.owner._has_embedding(self, t)]

    def _cached_features(self, frame_idx: int) -> tuple[torch.Tensor, ImageEmbedding]:
        embedding = self.owner._stored_embedding(self, frame_idx)
        if embedding is None:
            raise KeyError(frame_idx)
        images: FrameImages = dict.__getitem__(self, "images")
        return images[frame_idx][None], embedding
