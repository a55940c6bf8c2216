from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vos.config import (
    ConfigError,
    RunConfig,
    dump_config,
    load_config,
    parse_override,
    read_dumped_config,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_defaults_need_no_file() -> None:
    cfg = load_config()
    assert cfg == RunConfig()
    assert cfg.model.model_type == "repvit"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tracker.max_missed_frames=10", {"tracker": {"max_missed_frames": 10}}),
        ("model.fuse=false", {"model": {"fuse": False}}),
        ("model.checkpoint=null", {"model": {"checkpoint": None}}),
        ("seed=3", {"seed": 3}),
    ],
)
def test_parse_override_types_values(text: str, expected: dict) -> None:
    assert parse_override(text) == expected


def test_overrides_apply_in_order_and_int_widens_to_float() -> None:
    cfg = load_config(
        None, ["tracker.match_iou_min=1", "tracker.match_iou_min=0.25", "model.device=cuda"]
    )
    assert cfg.tracker.match_iou_min == 0.25
    assert isinstance(cfg.tracker.match_iou_min, float)
    assert cfg.model.device == "cuda"
    # The rest is untouched.
    assert cfg.prompt == RunConfig().prompt


@pytest.mark.parametrize(
    "override",
    [
        "tracker.no_such_key=1",
        "nosection.x=1",
        "tracker.max_missed_frames=ten",
        "model.fuse=1",
        "tracker=3",
        "missing_equals",
    ],
)
def test_bad_overrides_raise_config_error(override: str) -> None:
    with pytest.raises(ConfigError):
        load_config(None, [override])


def test_yaml_file_overrides_and_unknown_keys(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("tracker:\n  max_missed_frames: 7\nseed: 5\n")
    cfg = load_config(good, ["seed=6"])
    assert cfg.tracker.max_missed_frames == 7
    assert cfg.seed == 6

    bad = tmp_path / "bad.yaml"
    bad.write_text("tracker:\n  max_missed_frame: 7\n")
    with pytest.raises(ConfigError, match="max_missed_frame"):
        load_config(bad)

    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")

    broken = tmp_path / "broken.yaml"
    broken.write_text("tracker: [1, 2\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(broken)


@pytest.mark.parametrize("name", ["davis2017_val.yaml", "uvo_val.yaml", "webcam.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(REPO_ROOT / "configs" / name)
    assert isinstance(cfg, RunConfig)


def test_dump_round_trip_records_provenance(tmp_path: Path) -> None:
    cfg = load_config(None, ["tracker.max_missed_frames=4", "model.checkpoint=/w/x.pt"])
    out = dump_config(cfg, tmp_path / "run" / "resolved_config.yaml", checkpoint_sha256="ab" * 32)
    assert read_dumped_config(out) == cfg
    payload = yaml.safe_load(out.read_text())
    assert payload["provenance"]["checkpoint_sha256"] == "ab" * 32
    assert "git_sha" in payload["provenance"]
    assert [p.name for p in out.parent.iterdir()] == ["resolved_config.yaml"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tracker.max_missed_frames=-5", "tracker.max_missed_frames=-5: expected an integer >= 0"),
        ("prompt.num_points=-3", "prompt.num_points=-3: expected an integer from 1 to 64"),
        ("prompt.num_negative_points=1000", "prompt.num_negative_points=1000"),
        ("tracker.min_score=.nan", "tracker.min_score=nan: expected a finite number"),
        ("tracker.match_iou_min=1.5", "tracker.match_iou_min=1.5: expected a number from 0 to 1"),
        ("tracker.overlap=biggest", "tracker.overlap='biggest': expected one of"),
        ("prompt.kind=boxes", "prompt.kind='boxes': expected one of"),
        ("model.backend=tensorrt", "model.backend='tensorrt': expected one of"),
        ("model.fast_mode=size100", "model.fast_mode=size100: "),
        ("model.fast_mode=turbo", "model.fast_mode=turbo: "),
        ("model.dtype=float16", "model.dtype='float16': expected one of float32"),
        ("model.dtype=bfloat16", "model.dtype='bfloat16': expected float32 (the weights' dtype); "
                                 "for bfloat16 compute set model.fast_mode=bf16"),
        ("model.checkpoint_sha256=abc", "model.checkpoint_sha256='abc': expected 64 hex digits"),
        ("seed=-1", "seed=-1: expected an integer >= 0"),
    ],
)
def test_out_of_range_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_ranges_hold_for_configs_built_in_python() -> None:
    from vos.config import PromptConfig, TrackerConfig

    with pytest.raises(ConfigError, match=r"tracker\.min_area_ratio"):
        TrackerConfig(min_area_ratio=-0.1)
    with pytest.raises(ConfigError, match="use_prev_logits"):
        PromptConfig(kind="mask", use_prev_logits=False)


def test_fast_mode_is_parsed_once_and_dumped_as_text(tmp_path: Path) -> None:
    from repvit_sam.runtime import FastMode

    cfg = load_config(None, ["model.fast_mode=size512+ROI"])
    assert cfg.model.fast_mode == FastMode(input_size=512, pad_square=False, roi=True)
    out = dump_config(cfg, tmp_path / "resolved_config.yaml")
    assert yaml.safe_load(out.read_text())["config"]["model"]["fast_mode"] == "roi+size512"
    assert read_dumped_config(out) == cfg
