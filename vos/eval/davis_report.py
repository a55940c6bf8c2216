"""What an evaluation writes: the official CSV tables, ``scores.json`` and a bar chart.

The DAVIS tables (``global_results.csv`` with the seven DAVIS columns) serve every VOS
benchmark: their global row has the columns the benchmark's scorer gives, in its order
(YouTube-VOS adds seen/unseen, LVOS ``V-Mean``, vos-benchmark/SA-V has J&F, J and F only).

Example:
    >>> scores = evaluate_results(Path("DAVIS"), Path("results/osvos"))  # doctest: +SKIP
    >>> write_report(scores, Path("results/osvos"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

from vos.eval.davis import DavisScores
from vos.io.atomic import write_text_atomic

PLOT_NAME = "per_object_jf.png"


def write_report(scores: DavisScores, out_dir: Path) -> dict[str, Path]:
    """The CSVs and ``scores.json`` (:func:`write_official_csvs`) and the per-object chart.

    Returns:
        ``{"global": path, "per_sequence": path, "json": path, "plot": path}``.
    """
    paths = write_official_csvs(scores, out_dir)
    paths["plot"] = plot_per_object(scores, Path(out_dir) / PLOT_NAME)
    return paths


def write_official_csvs(scores: DavisScores, out_dir: Path) -> dict[str, Path]:
    """Writes the official CSV tables and a full-precision ``scores.json``, atomically.

    ``global_results.csv`` has the header ``J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,
    F-Decay`` (DAVIS; other scorers' columns in their order) and one row; ``per-sequence_results.csv`` has ``Sequence,J-Mean,F-Mean`` and one
    row per object (``<seq>_<id>``). Numbers are ``%.3f`` like the official pandas output.
    Existing files are overwritten (never reused).

    Args:
        scores: Output of :func:`evaluate_results`.
        out_dir: Destination folder (created if missing).

    Returns:
        ``{"global": path, "per_sequence": path, "json": path}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    global_lines = [
        ",".join(scores.global_metrics),
        ",".join(f"{value:.3f}" for value in scores.global_metrics.values()),
    ]
    seq_lines = ["Sequence,J-Mean,F-Mean"]
    seq_lines += [
        f"{key},{values['J-Mean']:.3f},{values['F-Mean']:.3f}"
        for key, values in scores.per_object.items()
    ]
    payload = {
        "split": scores.split,
        "results_dir": str(scores.results_dir) if scores.results_dir is not None else None,
        "global": scores.global_metrics,
        "per_object": scores.per_object,
        "per_frame": {
            key: {"J": scores.per_frame_j[key].tolist(), "F": scores.per_frame_f[key].tolist()}
            for key in scores.per_frame_j
        },
    }
    paths = {
        "global": out_dir / "global_results.csv",
        "per_sequence": out_dir / "per-sequence_results.csv",
        "json": out_dir / "scores.json",
    }
    write_text_atomic(paths["global"], "\n".join(global_lines) + "\n")
    write_text_atomic(paths["per_sequence"], "\n".join(seq_lines) + "\n")
    write_text_atomic(paths["json"], json.dumps(payload, indent=1, allow_nan=True) + "\n")
    return paths


def plot_per_object(scores: DavisScores, path: Path) -> Path:
    """Saves a bar chart of per-object J&F (mean of J-Mean and F-Mean), worst first.

    Args:
        scores: Output of :func:`evaluate_results`.
        path: Image file to write (format from the suffix, for example ``.png``).

    Returns:
        ``path``.
    """
    # A bare Figure renders through Agg without touching pyplot's global backend state.
    from matplotlib.figure import Figure

    path = Path(path)
    items = sorted(
        ((key, (vals["J-Mean"] + vals["F-Mean"]) / 2) for key, vals in scores.per_object.items()),
        key=lambda item: item[1],
    )
    labels = [key for key, _ in items]
    values = [value for _, value in items]
    fig = Figure(figsize=(max(4.0, 0.35 * len(items) + 1.5), 4.0), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.axhline(scores.global_metrics["J&F-Mean"], color="tab:red", linestyle="--", label="J&F-Mean")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("J&F")
    ax.set_title(f"per-object J&F ({len(items)} objects)")
    ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
