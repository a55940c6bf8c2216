"""Fetch official SAM-family checkpoints: ``python -m repvit_sam.download [--model M] [--dest DIR]``.

The library itself never downloads (STYLE 5.9); this module is the one explicit way to do it.
It uses only the standard library's ``urllib`` (plus ``tqdm`` for the progress bar), writes to a
temporary file in the destination folder and renames it into place only once the download is
complete and verified, so an interrupted or corrupt download never leaves a file with the final
name behind.

What is verified, per file (see ``WEIGHTS``):

- ``repvit`` (``repvit_sam.pt``, THU-MIG RepViT release v1.0): **no published hash or size is
  known**, so nothing is pinned. The only check is that the number of bytes received equals the
  ``Content-Length`` the server announced; ``load_checkpoint`` then rejects a file that does not
  fit the model. Pin it yourself with ``build_repvit_sam(..., checkpoint_sha256=...)``.
- ``vit_b``, ``vit_l``, ``vit_h`` (Meta's ``dl.fbaipublicfiles.com``): Meta publishes no hash
  file, but each file name ends in the first six hex digits of the file's MD5, and the full MD5
  and SHA-256 values below are the ones recorded independently by several downstream projects
  (for example micro-sam's pooch registry). Both are checked. Sizes are recorded where two
  sources agree (``vit_b``, ``vit_h``); ``vit_l``'s size is left out.
- ``vit_t`` (MobileSAM's ``mobile_sam.pt`` in its GitHub repository): SHA-256 and size as
  recorded by several downstream projects; the MobileSAM authors publish none.

Example:
    $ python -m repvit_sam.download --model repvit --dest weights
    >>> from repvit_sam.download import download_checkpoint
    >>> path = download_checkpoint("repvit", "weights")
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DEST = Path("weights")
CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class WeightSpec:
    """Where one official checkpoint lives and what is known about its bytes.

    Attributes:
        url: the official download address.
        filename: the file name to save under (the official one).
        sha256: expected hex SHA-256, or None when no trustworthy value is known.
        md5: expected hex MD5, or None when no trustworthy value is known.
        size: expected size in bytes, or None when unknown.
    """

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


WEIGHTS: dict[str, WeightSpec] = {
    "repvit": WeightSpec(
        url="https://github.com/THU-MIG/RepViT/releases/download/v1.0/repvit_sam.pt",
        filename="repvit_sam.pt",
    ),
    "vit_t": WeightSpec(
        url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        filename="mobile_sam.pt",
        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        size=40_728_226,
    ),
    "vit_b": WeightSpec(
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        filename="sam_vit_b_01ec64.pth",
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        md5="01ec64d29a2fca3f0661936605ae66f8",
        size=375_042_383,
    ),
    "vit_l": WeightSpec(
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        filename="sam_vit_l_0b3195.pth",
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        md5="0b3195507c641ddb6910d2bb5adee89c",
    ),
    "vit_h": WeightSpec(
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        filename="sam_vit_h_4b8939.pth",
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        md5="4b8939a88964f0f4ff5f5b2642c598a6",
        size=2_564_550_879,
    ),
}


class DownloadError(RuntimeError):
    """A checkpoint could not be fetched or did not verify. The message is one line."""


def _manual_hint(spec: WeightSpec, target: Path) -> str:
    return f"download {spec.url} by hand and save it as {target}"


def _fetch(spec: WeightSpec, target: Path, *, progress: bool, timeout: float) -> None:
    """Stream ``spec.url`` into a temporary file beside ``target``, verify, then rename."""
    from tqdm.auto import tqdm

    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    received = 0
    try:
        try:
            response = urllib.request.urlopen(spec.url, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise DownloadError(
                f"HTTP {exc.code} {exc.reason} for {spec.url}; {_manual_hint(spec, target)}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DownloadError(
                f"cannot reach {spec.url} ({reason}); are you offline? {_manual_hint(spec, target)}"
            ) from None
        with response:
            length_header = response.headers.get("Content-Length")
            announced = int(length_header) if length_header and length_header.isdigit() else None
            total = announced if announced is not None else spec.size
            with (
                open(part, "wb") as fh,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=spec.filename,
                    disable=not progress,
                ) as bar,
            ):
                while True:
                    try:
                        chunk = response.read(CHUNK_SIZE)
                    except (OSError, http.client.HTTPException) as exc:
                        raise DownloadError(
                            f"connection lost after {received} bytes of {spec.url} ({exc}); "
                            f"{_manual_hint(spec, target)}"
                        ) from None
                    if not chunk:
                        break
                    fh.write(chunk)
                    sha256.update(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
        _verify(spec, target, received, announced, sha256.hexdigest(), md5.hexdigest())
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def _verify(
    spec: WeightSpec,
    target: Path,
    received: int,
    announced: int | None,
    sha256: str,
    md5: str,
) -> None:
    hint = _manual_hint(spec, target)
    if announced is not None and received != announced:
        raise DownloadError(
            f"incomplete download of {spec.url}: got {received} of {announced} bytes; {hint}"
        )
    if spec.size is not None and received != spec.size:
        raise DownloadError(
            f"size mismatch for {spec.url}: expected {spec.size} bytes, got {received}; {hint}"
        )
    if spec.sha256 is not None and sha256 != spec.sha256.lower():
        raise DownloadError(
            f"SHA-256 mismatch for {spec.url}: expected {spec.sha256}, got {sha256}; {hint}"
        )
    if spec.md5 is not None and md5 != spec.md5.lower():
        raise DownloadError(f"MD5 mismatch for {spec.url}: expected {spec.md5}, got {md5}; {hint}")


def download_checkpoint(
    model: str = "repvit",
    dest: str | os.PathLike[str] = DEFAULT_DEST,
    *,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download one official checkpoint into ``dest`` unless it is already there.

    Args:
        model: a key of ``WEIGHTS``: "repvit", "vit_t", "vit_b", "vit_l" or "vit_h".
        dest: the folder to save into; created if missing.
        force: download again even if the file exists.
        progress: show a tqdm progress bar on stderr.
        timeout: socket timeout in seconds for connecting and for each read.

    Returns:
        The path of the checkpoint file.

    Raises:
        ValueError: unknown ``model``.
        DownloadError: offline, HTTP error, truncated download, or a size or hash mismatch;
            no partial file is left behind.
    """
    if model not in WEIGHTS:
        raise ValueError(f"model: expected one of {sorted(WEIGHTS)}, got {model!r}")
    spec = WEIGHTS[model]
    folder = Path(dest)
    target = folder / spec.filename
    if target.is_file() and not force:
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create folder {folder}: {exc}") from None
    _fetch(spec, target, progress=progress, timeout=timeout)
    return target


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 0 on success and 2 on any download error."""
    parser = argparse.ArgumentParser(
        prog="python -m repvit_sam.download",
        description="Download an official RepViT-SAM, MobileSAM or SAM checkpoint.",
    )
    parser.add_argument("--model", choices=list(WEIGHTS), default="repvit")
    parser.add_argument(
        "--dest", type=Path, default=DEFAULT_DEST, help="folder to save into (default: weights)"
    )
    parser.add_argument("--force", action="store_true", help="download even if the file exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        path = download_checkpoint(args.model, args.dest, force=args.force, progress=not args.quiet)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # writing the file: permissions, disk full
        print(f"error: cannot write the checkpoint into {args.dest}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no partial file was kept", file=sys.stderr)
        return 130
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
