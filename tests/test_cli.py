"""``python -m vos.run``: help, one-line user errors, and end-to-end runs on real video."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from vos.io.davis_png import read_palette_png, write_palette_png
from vos.io.sinks import decode_rle, probe_video_frames
from vos.run import main


def write_video(path: Path, num_frames: int = 4, hw: tuple[int, int] = (64, 96)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (hw[1], hw[0]))
    for t in range(num_frames):
        frame = np.zeros((*hw, 3), np.uint8)
        frame[20:40, 10 + 5 * t : 30 + 5 * t] = 255
        writer.write(frame)
    writer.release()
    return path


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vos.run", *args], capture_output=True,
                          text=True, timeout=600, check=False)


def test_help_lists_every_mode(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for mode in ("video", "webcam", "davis", "uvo", "batch"):
        assert mode in out


def test_without_checkpoint_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("REPVIT_SAM_CHECKPOINT", raising=False)
    video = write_video(tmp_path / "v.mp4")
    code = main([str(video), "--init-box", "5,5,30,30", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert "python -m repvit_sam.download" in err and "--checkpoint" in err


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    video = write_video(tmp_path / "clip.mp4")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    (tmp_path / "no_frames").mkdir()
    empty_mask = tmp_path / "empty_mask.png"
    write_palette_png(empty_mask, np.zeros((64, 96), np.uint8))
    small_mask = tmp_path / "small_mask.png"
    write_palette_png(small_mask, np.ones((10, 10), np.uint8))
    return {"video": video, "truncated": truncated, "empty": empty,
            "no_frames": tmp_path / "no_frames", "empty_mask": empty_mask,
            "small_mask": small_mask, "tmp": tmp_path}


@pytest.mark.parametrize(
    ("source", "extra", "message"),
    [
        ("missing", ["--init-box", "1,1,9,9"], "no such file"),
        ("truncated", ["--init-box", "1,1,9,9"], "cannot decode"),
        ("empty", ["--init-box", "1,1,9,9"], "empty"),
        ("no_frames", ["--init-box", "1,1,9,9"], "no images"),
        ("video", ["--init-box", "30,10,5,20"], "x0 < x1"),
        ("video", ["--init-box", "10,10,500,20"], "outside the 96x64 frame"),
        ("video", ["--init-box", "1,2,3"], "four numbers"),
        # A value starting with '-' is the flag's value, not an option (argparse's usage text).
        ("video", ["--init-box", "-5,2,30,20"], "box -5,2,30,20: outside the 96x64 frame"),
        ("video", ["--init-box", "-.5,2,30,20"], "box -0.5,2,30,20: outside"),
        ("video", ["--init-points", "-5,3"], "outside"),
        ("video", ["--init-points", "5,5,7"], "label 0 or 1"),
        ("video", ["--init-points", "500,5"], "outside"),
        ("video", ["--init-mask", "empty_mask"], "empty"),
        ("video", ["--init-mask", "small_mask"], "differs from the video"),
        ("video", [], "no initial prompt"),
        ("video", ["--init-box", "1,1,9,9", "--set", "tracker.nope=1"], "unknown config key"),
        ("video", ["--init-box", "1,1,9,9", "--set", "tracker.max_missed_frames=x"], "expected int"),
    ],
)
def test_bad_input_gives_one_line_error(
    inputs: dict[str, Path], random_checkpoint: Path, capsys: pytest.CaptureFixture,
    source: str, extra: list[str], message: str,
) -> None:
    src = inputs["tmp"] / "missing.mp4" if source == "missing" else inputs[source]
    extra = [str(inputs[e]) if e in inputs else e for e in extra]
    out_dir = inputs["tmp"] / "out"
    code = main([str(src), *extra, "--checkpoint", str(random_checkpoint), "--output",
                 str(out_dir), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 0, err
    assert message in err
    assert not (out_dir / "masks").exists(), "nothing is written for a rejected input"


def check_outputs(out: Path, num_frames: int, hw: tuple[int, int]) -> None:
    pngs = sorted((out / "masks").glob("*.png"))
    jsons = sorted((out / "json").glob("*.json"))
    assert [p.stem for p in pngs] == [f"{i:05d}" for i in range(num_frames)]
    assert [p.stem for p in jsons] == [p.stem for p in pngs]
    for png, js in zip(pngs, jsons, strict=True):
        index = read_palette_png(png)
        assert index.shape == hw
        record = json.loads(js.read_text())
        assert record["image_hw"] == list(hw)
        for obj in record["objects"]:
            assert np.array_equal(decode_rle(obj["segmentation"]), index == obj["obj_id"]) or (
                decode_rle(obj["segmentation"]).sum() >= (index == obj["obj_id"]).sum()
            )
    assert probe_video_frames(out / "overlay.mp4") == num_frames
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.partial"))
    assert (out / "resolved_config.yaml").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True


def test_blackswan_end_to_end_and_resume(data_dir: Path, random_checkpoint: Path,
                                         tmp_path: Path) -> None:
    video = data_dir / "videos" / "blackswan.mp4"
    out = tmp_path / "out"
    args = [str(video), "--init-box", "380,100,560,330", "--checkpoint", str(random_checkpoint),
            "--output", str(out), "--quiet"]
    first = run_cli([*args, "--max-frames", "2"])
    assert first.returncode == 0, first.stderr
    check_outputs(out, 2, (480, 854))
    before = {p.name: p.stat().st_mtime_ns for p in (out / "masks").glob("*.png")}
    second = run_cli([*args, "--max-frames", "3"])
    assert second.returncode == 0, second.stderr
    check_outputs(out, 3, (480, 854))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_resumed"] == 2 and summary["frames_processed"] == 1
    after = {p.name: p.stat().st_mtime_ns for p in (out / "masks").glob("*.png")}
    assert all(after[name] == before[name] for name in before), "finished frames are kept"
    changed = run_cli([args[0], "--init-box", "10,10,100,100", *args[3:], "--max-frames", "3"])
    assert changed.returncode == 2 and "different run" in changed.stderr


@pytest.mark.slow
def test_blackswan_full_video(data_dir: Path, random_checkpoint: Path, tmp_path: Path) -> None:
    video = data_dir / "videos" / "blackswan.mp4"
    out = tmp_path / "full"
    result = run_cli([str(video), "--init-box", "380,100,560,330", "--checkpoint",
                      str(random_checkpoint), "--output", str(out), "--quiet"])
    assert result.returncode == 0, result.stderr
    check_outputs(out, 50, (480, 854))


def test_binary_black_and_white_init_mask_is_one_object(tmp_path: Path) -> None:
    from vos.io.prompt_input import masks_from_png

    mask = np.zeros((64, 96), np.uint8)
    mask[10:30, 20:40] = 255
    path = tmp_path / "bw.png"
    cv2.imwrite(str(path), mask)
    prompts = masks_from_png(path, (64, 96))
    assert len(prompts) == 1 and prompts[0].obj_id == 1
    assert prompts[0].mask.sum() == 400


def test_default_backend_is_the_fastest_installed_on_cpu(random_checkpoint: Path) -> None:
    """model.backend=auto: OpenVINO > ONNX Runtime > channels-last torch on a CPU device."""
    from repvit_sam.runtime import BackendSegmenter, default_backend, resolve_backend
    from vos.config import ModelConfig
    from vos.models import build_segmenter

    assert ModelConfig().backend == "auto"
    segmenter = build_segmenter(ModelConfig(checkpoint=str(random_checkpoint)))
    assert isinstance(segmenter, BackendSegmenter)
    assert segmenter.backend == default_backend()
    assert segmenter.decoder_backend == "torch"
    # Off the CPU, auto falls back to the reference predictor; explicit choices stay.
    assert resolve_backend("auto", "cuda:1") == "predictor"
    assert resolve_backend("auto", "cpu") == "auto"
    assert resolve_backend("openvino", "cuda") == "openvino"


def test_roi_fast_mode_runs_end_to_end(random_checkpoint: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    video = write_video(tmp_path / "clip.mp4", num_frames=4)
    out = tmp_path / "out"
    code = main([str(video), "--init-box", "10,20,30,40", "--checkpoint", str(random_checkpoint),
                 "--set", "model.fast_mode=roi+size256", "--set", "model.backend=torch",
                 "--output", str(out), "--quiet"])
    assert code == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(4)]
    assert "roi(torch[channels_last] size256+nopad)" in capsys.readouterr().out
    code = main([str(video), "--init-box", "10,20,30,40", "--checkpoint", str(random_checkpoint),
                 "--set", "model.fast_mode=roi+size100", "--output", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: model.fast_mode=roi+size100: ")
    assert err.count("\n") == 1


def test_resolved_config_records_the_hash_of_the_loaded_checkpoint(
        random_checkpoint: Path, tmp_path: Path) -> None:
    import hashlib

    import yaml

    video = write_video(tmp_path / "clip.mp4", num_frames=1)
    out = tmp_path / "out"
    code = main([str(video), "--init-box", "10,20,30,40", "--checkpoint", str(random_checkpoint),
                 "--set", "model.backend=predictor", "--output", str(out), "--quiet"])
    assert code == 0
    provenance = yaml.safe_load((out / "resolved_config.yaml").read_text())["provenance"]
    # Computed from the file (no expected hash was configured), not copied from the config.
    assert provenance["checkpoint_sha256"] == hashlib.sha256(
        random_checkpoint.read_bytes()).hexdigest()


@pytest.mark.slow
def test_cli_killed_mid_video_resumes_to_the_same_bytes(data_dir: Path, random_checkpoint: Path,
                                                        tmp_path: Path) -> None:
    """The issue's case: SIGKILL once 16 frames are written, with the object LOST, then rerun."""
    import os
    import signal
    import time

    video = data_dir / "videos" / "blackswan.mp4"
    args = [str(video), "--init-box", "380,100,560,330", "--checkpoint", str(random_checkpoint),
            "--max-frames", "40", "--set", "model.backend=torch",
            "--set", "model.fast_mode=size256+nopad", "--quiet"]
    reference = tmp_path / "reference"
    assert run_cli([*args, "--output", str(reference)]).returncode == 0
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "vos.run", *args, "--output", str(killed)],
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list((killed / "json").glob("*.json"))) < 16 and time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = sorted((killed / "json").glob("*.json"))
    assert 16 <= len(written) < 40
    assert json.loads(written[-1].read_text())["lost_obj_ids"] == [1], "killed while LOST"
    resumed = run_cli([*args, "--output", str(killed)])
    assert resumed.returncode == 0, resumed.stderr
    for sub, pattern in (("masks", "*.png"), ("json", "*.json")):
        mine = {p.name: p.read_bytes() for p in (killed / sub).glob(pattern)}
        theirs = {p.name: p.read_bytes() for p in (reference / sub).glob(pattern)}
        assert len(mine) == 40 and mine == theirs


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ('[{"frame": 0, "obj_id": 1, "box": [1, 1, 9, 9]', "not valid JSON"),
        ([{"frame": 4, "obj_id": 1, "box": [1, 1, 9, 9]}], "entry 0: frame 4 out of range; the video has 4 frames"),
        ([{"frame": 0, "obj_id": 1, "box": [1, 1, 9, 9]}, {"frame": 1, "obj_id": 0, "box": [1, 1, 9, 9]}],
         "entry 1: obj_id 0 out of range; expected an int in 1..254"),
        ([{"frame": 0, "obj_id": 1, "points": [[5, 5]]}], "entry 0: points without labels"),
        ('[{"frame": 0, "obj_id": 1, "points": [[NaN, 5]], "labels": [1]}]', "finite numbers"),
        ([{"frame": 0, "obj_id": 1, "points": [[500, 5]], "labels": [1]}], "outside the 96x64 frame"),
        ([{"frame": 0, "obj_id": 1, "mask": "small_mask.png"}], "size 10x10 differs from the video's 96x64"),
        ([{"frame": 0, "obj_id": 1, "box": [1, 1, 9, 9], "frames": 3}], "unknown key 'frames'"),
    ],
)
def test_bad_prompts_file_gives_one_line_error_before_the_model_loads(
    inputs: dict[str, Path], capsys: pytest.CaptureFixture, entries: object, message: str,
) -> None:
    path = inputs["tmp"] / "prompts.json"
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries))
    out_dir = inputs["tmp"] / "out"
    # No checkpoint is needed: the prompts are refused before the model loads.
    code = main([str(inputs["video"]), "--prompts", str(path), "--checkpoint",
                 str(inputs["tmp"] / "no_such_checkpoint.pt"), "--output", str(out_dir), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"error: --prompts {path}: ") and err.count("\n") == 0, err
    assert message in err
    assert not out_dir.exists(), "nothing is written for a rejected input"


def test_prompts_file_in_both_directions_end_to_end(random_checkpoint: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """Object 1 by a box on frame 2, object 2 by clicks on frame 0: frames 0-1 of object 1
    come from the backward pass (the default with prompts after frame 0)."""
    video = write_video(tmp_path / "clip.mp4", num_frames=4)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([
        {"frame": 2, "obj_id": 1, "box": [18, 18, 42, 42]},
        {"frame": 0, "obj_id": 2, "points": [[60, 50], [20, 30]], "labels": [1, 0]},
    ]))
    out = tmp_path / "out"
    code = main([str(video), "--prompts", str(prompts), "--checkpoint", str(random_checkpoint),
                 "--set", "model.backend=torch", "--set", "model.fast_mode=size256+nopad",
                 "--output", str(out), "--quiet"])
    assert code == 0
    assert "3 tracked backward" in capsys.readouterr().out  # frames 2, 1, 0
    check_outputs(out, 4, (64, 96))
    assert not (out / ".backward").exists()
    for t in range(4):
        record = json.loads((out / "json" / f"{t:05d}.json").read_text())
        seen = {o["obj_id"] for o in record["objects"]} | set(record["lost_obj_ids"])
        assert seen == {1, 2}, f"frame {t}: {record}"
