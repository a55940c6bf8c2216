"""The benchmark table: one :class:`VosPreset` per semi-supervised VOS dataset layout.

Adding a dataset is one entry in :data:`PRESETS`: where its frames, annotations and sequence
list are, how annotations are stored, when objects enter the tracker, how results are written
and scored, and which server layout its submission zip follows. ``python -m vos.run vos
--preset NAME`` reads the table; the flags ``--frames``, ``--annotations`` and ``--list``
override its folders, so an unlisted dataset in one of these layouts runs as ``generic``.

| preset | frames / annotations (under the root) | objects enter | scored by | zip |
|---|---|---|---|---|
| ``davis2017`` | JPEGImages/480p, Annotations/480p, ImageSets/2017 | frame 0 | davis2017-evaluation | sequences |
| ``davis2016`` | same, ImageSets/2016; one binary object | frame 0 | davis2017-evaluation | sequences |
| ``youtube-vos`` | JPEGImages, Annotations, meta.json | first mask | vos-benchmark + seen/unseen | Annotations/ |
| ``mose`` | JPEGImages, Annotations | frame 0 | davis2017-evaluation | sequences |
| ``lvos`` | JPEGImages, Annotations, valid_meta.json | first mask | lvos-evaluation (v2) | none |
| ``lvos-v1`` | the same | first mask | lvos-evaluation (v1) | none |
| ``sa-v`` | JPEGImages_24fps, Annotations_6fps (one PNG per object) | first mask | sav_evaluator | none |
| ``generic`` | JPEGImages, Annotations | first mask | vos-benchmark | none |

Where only a server scores (YouTube-VOS and MOSE valid, DAVIS test-dev) the annotations hold
just the prompts, and the run writes the zip instead of scores (:mod:`vos.eval.submission`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PRESETS", "VosPreset", "preset"]

ANNOTATION_FORMATS = ("palette", "per_object")
OBJECT_RULES = ("first_frame", "first_appearance")
SCORERS = ("davis", "vos-benchmark", "lvos", "lvos-v1")
SUBMISSIONS = ("annotations", "sequences")


@dataclass(frozen=True)
class VosPreset:
    """How one benchmark lays out its data, feeds the tracker, writes and scores results.

    Attributes:
        name: the ``--preset`` value.
        title: dataset name for messages and tables ("not a DAVIS root").
        frames: frames folder relative to the root; ``<frames>/<seq>/<stem>.jpg``.
        annotations: annotations folder relative to the root: ``<annotations>/<seq>/<stem>.png``
            (palette) or ``<annotations>/<seq>/<obj>/<stem>.png`` (per object).
        sequence_list: the sequence list relative to the root, ``{split}`` filled in; the
            name ``meta.json`` means the keys of its ``videos``; None means every sequence
            folder of the annotations.
        split: the default split for ``{split}``.
        annotation_format: "palette" (one PNG per frame, pixel = object id, 255 = void) or
            "per_object" (one binary PNG per object and frame; masks may overlap). Results are
            written in the same format.
        binary: every non-zero annotation pixel is the one object (DAVIS 2016 stores it as
            255); results are read the same way.
        objects_from: "first_frame" adds the objects of the first frame's annotation only
            (DAVIS); "first_appearance" adds each object on the frame of its first non-empty
            mask (YouTube-VOS, MOSE, LVOS, SA-V; later masks are never given to the tracker).
        scorer: key of ``vos.eval.benchmarks.SCORERS``: "davis" (davis2017-evaluation rules),
            "vos-benchmark" (vos-benchmark / SA-V's sav_evaluator rules), "lvos" (the
            lvos-evaluation rules of today, v2) or "lvos-v1" (its first release's).
        submission: layout of the server zip: "annotations" (``Annotations/<seq>/<stem>.png``,
            YouTube-VOS), "sequences" (``<seq>/<stem>.png`` at the root, the DAVIS and MOSE
            CodaLab checks), or None (no server).
        meta: schema of the root's meta file (the sequence list when it is a ``.json``, else
            ``meta.json``): "youtube" (per object ``frames`` and ``category``), "lvos" (per
            object ``frame_range``) or None (not read).
        unseen_videos: the packaged list (``vos/eval/data/``) of the videos the benchmark
            scores as its unseen group, the default of ``--unseen-videos``; None: no groups.
        notes: one line for the CLI help.
    """

    name: str
    title: str
    frames: str
    annotations: str
    sequence_list: str | None
    split: str = "val"
    annotation_format: str = "palette"
    binary: bool = False
    objects_from: str = "first_appearance"
    scorer: str = "vos-benchmark"
    submission: str | None = None
    meta: str | None = None
    unseen_videos: str | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.annotation_format, ANNOTATION_FORMATS, "annotation_format"),
            (self.objects_from, OBJECT_RULES, "objects_from"),
            (self.scorer, SCORERS, "scorer"),
        ):
            if value not in allowed:
                raise ValueError(f"preset {self.name}: {what} {value!r} not in {allowed}")
        if self.submission is not None and self.submission not in SUBMISSIONS:
            raise ValueError(f"preset {self.name}: submission {self.submission!r} not in "
                             f"{SUBMISSIONS}")

    @property
    def per_object(self) -> bool:
        """Annotations and results are one binary PNG per object (masks may overlap)."""
        return self.annotation_format == "per_object"


PRESETS: dict[str, VosPreset] = {
    p.name: p
    for p in (
        VosPreset(
            "davis2017", "DAVIS", "JPEGImages/480p", "Annotations/480p",
            "ImageSets/2017/{split}.txt", objects_from="first_frame", scorer="davis",
            submission="sequences",
            notes="DAVIS 2017: frame-0 objects, J&F on frames 1..N-2 (davis2017-evaluation)"),
        VosPreset(
            "davis2016", "DAVIS 2016", "JPEGImages/480p", "Annotations/480p",
            "ImageSets/2016/{split}.txt", binary=True, objects_from="first_frame",
            scorer="davis", submission="sequences",
            notes="DAVIS 2016: one binary object per sequence, scored as DAVIS 2017"),
        VosPreset(
            "youtube-vos", "YouTube-VOS", "JPEGImages", "Annotations", "meta.json",
            split="valid", submission="annotations", meta="youtube",
            notes="YouTube-VOS 2018/2019: objects enter on their first mask; zip for the "
                  "server; seen/unseen J and F where ground truth and categories exist"),
        VosPreset(
            "mose", "MOSE", "JPEGImages", "Annotations", None, split="valid",
            objects_from="first_frame", scorer="davis", submission="sequences",
            notes="MOSE: YouTube-VOS-like folders, the objects of frame 0 (the only "
                  "annotated frame of valid), DAVIS rules, zip for its CodaLab server"),
        VosPreset(
            "lvos", "LVOS", "JPEGImages", "Annotations", "{split}_meta.json", split="valid",
            scorer="lvos", meta="lvos", unseen_videos="lvos_unseen_v2.txt",
            notes="LVOS v2 (and v1 data scored as today): objects enter on their first mask, "
                  "leave and come back; lvos-evaluation as of today (every 5th frame of each "
                  "object's range without its first and last; seen/unseen means)"),
        VosPreset(
            "lvos-v1", "LVOS", "JPEGImages", "Annotations", "{split}_meta.json",
            split="valid", scorer="lvos-v1", meta="lvos", unseen_videos="lvos_unseen_v1.txt",
            notes="LVOS v1 as first scored (lvos-evaluation 457d397, Nov 2022): every 5th "
                  "frame of each object's range, the first included; seen/unseen means"),
        VosPreset(
            "sa-v", "SA-V", "JPEGImages_24fps", "Annotations_6fps", "sav_{split}.txt",
            annotation_format="per_object",
            notes="SA-V val/test: 24 fps frames, one PNG per object every 4th frame; "
                  "sav_evaluator rules"),
        VosPreset(
            "generic", "VOS", "JPEGImages", "Annotations", None,
            notes="any frames + annotations folders (--frames, --annotations, --list)"),
    )
}


def preset(name: str) -> VosPreset:
    """The preset called ``name``.

    Raises:
        ValueError: no such preset (the message lists them).
    """
    if name not in PRESETS:
        raise ValueError(f"--preset {name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name]
