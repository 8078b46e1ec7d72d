"""``napari-focsam weights``: list, download, verify and locate model checkpoints.

Subcommands
-----------
weights list [--check]
    Every registered checkpoint: id, family, cache state, approximate size, cache path.
weights download MODEL [--url BASE] [--no-progress]
    Download (and verify) a checkpoint into the cache; a progress bar goes to stderr.
weights verify MODEL [--file PATH] [--deep]
    Check the cached file (or ``PATH``) against the published or first-recorded SHA-256.
weights path MODEL
    Print where the checkpoint is, or should be put, in the cache.

Each takes ``--cache-dir``. Imports neither torch nor requests (a download or a deep check
does, when it runs).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import UserError
from ..weights import (
    cached_path,
    expected_hash,
    fetch_weights,
    get_spec,
    list_specs,
    verify_weights,
    weights_status,
)
from .common import set_command

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``weights`` and its subcommands to the ``napari-focsam`` subcommands; returns its
    parser."""
    weights = subparsers.add_parser("weights", help="list, download and check model checkpoints",
                                    description=__doc__.split("\n")[0])
    actions = weights.add_subparsers(dest="weights_command", required=True)
    cache = argparse.ArgumentParser(add_help=False)
    cache.add_argument("--cache-dir", type=Path, default=None,
                       help="weights cache folder (default: $NAPARI_FOCSAM_WEIGHTS_DIR or the user "
                            "cache folder)")

    lst = actions.add_parser("list", help="registered checkpoints and their cache state",
                             parents=[cache])
    lst.add_argument("--check", action="store_true",
                     help="hash the cached files (slow for GB files)")
    set_command(lst, _list, preload=())

    dl = actions.add_parser("download", help="download a checkpoint into the cache",
                            parents=[cache])
    dl.add_argument("model", help="model id (see `weights list`)")
    dl.add_argument("--url", default=None, metavar="BASE",
                    help="mirror base URL: fetch <BASE>/<file name> (default: "
                         "$NAPARI_FOCSAM_WEIGHTS_URL, else the official URL)")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")
    set_command(dl, _download, interrupted="nothing written (the partial download is deleted)",
                preload=())

    ver = actions.add_parser("verify", help="check a checkpoint's SHA-256", parents=[cache])
    ver.add_argument("model", help="model id (see `weights list`)")
    ver.add_argument("--file", type=Path, default=None, metavar="PATH",
                     help="check this file instead of the cached one")
    ver.add_argument("--deep", action="store_true",
                     help="also load it and check the model family (slow)")
    set_command(ver, _verify)

    path = actions.add_parser("path", help="print where a checkpoint is (or goes) in the cache",
                              parents=[cache])
    path.add_argument("model", help="model id (see `weights list`)")
    set_command(path, _path, preload=())
    return weights


def _size(n: float | None) -> str:
    if not n:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"~{n:.0f} {unit}" if unit == "B" else f"~{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _list(args: argparse.Namespace) -> int:
    rows = [("id", "family", "status", "size", "path")]
    for spec in list_specs():
        path = cached_path(spec.id, args.cache_dir)
        status = weights_status(spec.id, args.cache_dir, check_hash=args.check)
        size = path.stat().st_size if path.is_file() else spec.size
        rows.append((spec.id, spec.family, status, _size(size), str(path)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:4], widths, strict=True)]
        sys.stdout.write("  ".join([*cells, row[4]]) + "\n")
    return 0


def _check_cache_folder(folder: Path) -> None:
    """UserError unless checkpoints can be written in `folder` (it, or the first of its parents
    that exists, is a writable folder)."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    fix = "give --cache-dir a writable folder (or set $NAPARI_FOCSAM_WEIGHTS_DIR)"
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == folder else f"is inside {existing}, a file"
        raise UserError(f"the weights cache {folder} {where}, not a folder; {fix}")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"no permission to write in the weights cache {existing}; {fix}")


def _download(args: argparse.Namespace) -> int:
    folder = cached_path(args.model, args.cache_dir).parent
    _check_cache_folder(folder)
    try:
        path = fetch_weights(args.model, cache_dir=args.cache_dir, url=args.url,
                             progress=not args.no_progress)
    except OSError as exc:  # creating the folder or the part file (read-only, full, ...)
        raise UserError(f"cannot write in the weights cache {folder}: "
                        f"{exc.strerror or exc}; give --cache-dir a writable folder (or set "
                        "$NAPARI_FOCSAM_WEIGHTS_DIR)") from exc
    sys.stdout.write(f"{path}\n")
    return 0


def _verify(args: argparse.Namespace) -> int:
    spec = get_spec(args.model)
    path = args.file if args.file is not None else cached_path(args.model, args.cache_dir)
    reference = expected_hash(args.model, path)
    digest = verify_weights(args.model, path, deep=args.deep)
    if reference is None:
        note = "no published or recorded hash to compare with"
    else:
        kind = "published" if spec.published_hash else "recorded"
        name = "xxHash-128" if reference[0] == "xxh128" else "SHA-256"
        note = f"matches the {kind} hash ({name})"
    sys.stdout.write(f"OK {path}: sha256 {digest} ({note})\n")
    return 0


def _path(args: argparse.Namespace) -> int:
    get_spec(args.model)
    sys.stdout.write(f"{cached_path(args.model, args.cache_dir)}\n")
    return 0
