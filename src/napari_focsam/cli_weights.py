"""``napari-focsam weights``: list, download, verify and locate model checkpoints.

Subcommands
-----------
weights list
    Every registered checkpoint: id, family, cache state, approximate size, cache path.
weights download MODEL [--url BASE] [--cache-dir DIR]
    Download (and verify) a checkpoint into the cache; a progress bar goes to stderr.
weights verify MODEL [--file PATH] [--deep]
    Check the cached file (or ``PATH``) against the published or first-recorded SHA-256.
weights path MODEL
    Print where the checkpoint is, or should be put, in the cache.

Exit codes
----------
0 ok, 2 unknown model or bad usage, 3 download / network error, 4 hash mismatch or failed
verification, 5 offline and the file is not cached.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .weights import (
    DownloadError,
    UnknownModelError,
    WeightsError,
    WeightsNotAvailableError,
    WeightsVerificationError,
    cached_path,
    expected_sha256,
    fetch_weights,
    get_spec,
    list_specs,
    verify_weights,
    weights_status,
)

__all__ = ["EXIT_DOWNLOAD", "EXIT_OFFLINE", "EXIT_OK", "EXIT_USAGE", "EXIT_VERIFY",
           "add_weights_parser", "run_weights"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DOWNLOAD = 3
EXIT_VERIFY = 4
EXIT_OFFLINE = 5


def add_weights_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``weights`` command (and its subcommands) to ``subparsers``; returns its parser.

    The parsed namespace has ``command == "weights"`` and ``weights_command`` in
    ``{"list", "download", "verify", "path"}``; pass it to :func:`run_weights`.
    """
    weights = subparsers.add_parser("weights", help="list, download and check model checkpoints",
                                    description=__doc__.split("\n")[0])
    actions = weights.add_subparsers(dest="weights_command", required=True)

    def cache_dir_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cache-dir", type=Path, default=None,
                       help="weights cache folder (default: $NAPARI_FOCSAM_WEIGHTS_DIR or the user "
                            "cache folder)")

    lst = actions.add_parser("list", help="registered checkpoints and their cache state")
    lst.add_argument("--check", action="store_true",
                     help="hash the cached files (slow for GB files)")
    cache_dir_arg(lst)

    dl = actions.add_parser("download", help="download a checkpoint into the cache")
    dl.add_argument("model", help="model id (see `weights list`)")
    dl.add_argument("--url", default=None, metavar="BASE",
                    help="mirror base URL: fetch <BASE>/<file name> (default: "
                         "$NAPARI_FOCSAM_WEIGHTS_URL, else the official URL)")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")
    cache_dir_arg(dl)

    ver = actions.add_parser("verify", help="check a checkpoint's SHA-256")
    ver.add_argument("model", help="model id (see `weights list`)")
    ver.add_argument("--file", type=Path, default=None, metavar="PATH",
                     help="check this file instead of the cached one")
    ver.add_argument("--deep", action="store_true",
                     help="also load it and check the model family (slow)")
    cache_dir_arg(ver)

    path = actions.add_parser("path", help="print where a checkpoint is (or goes) in the cache")
    path.add_argument("model", help="model id (see `weights list`)")
    cache_dir_arg(path)
    return weights


def _size(n: int | None) -> str:
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
    return EXIT_OK


def _download(args: argparse.Namespace) -> int:
    path = fetch_weights(args.model, cache_dir=args.cache_dir, url=args.url,
                         progress=not args.no_progress)
    sys.stdout.write(f"{path}\n")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    spec = get_spec(args.model)
    path = args.file if args.file is not None else cached_path(args.model, args.cache_dir)
    reference = expected_sha256(args.model, path)
    digest = verify_weights(args.model, path, deep=args.deep)
    if reference is None:
        note = "no published or recorded hash to compare with"
    else:
        note = f"matches the {'published' if spec.sha256 else 'recorded'} hash"
    sys.stdout.write(f"OK {path}: sha256 {digest} ({note})\n")
    return EXIT_OK


def _path(args: argparse.Namespace) -> int:
    get_spec(args.model)
    sys.stdout.write(f"{cached_path(args.model, args.cache_dir)}\n")
    return EXIT_OK


_ACTIONS = {"list": _list, "download": _download, "verify": _verify, "path": _path}


def run_weights(args: argparse.Namespace) -> int:
    """Run a parsed ``weights`` command; returns the exit code (see the module doc).

    Errors are written to stderr as one ``napari-focsam: error: ...`` line.
    """
    try:
        return _ACTIONS[args.weights_command](args)
    except UnknownModelError as exc:
        code, message = EXIT_USAGE, str(exc)
    except WeightsNotAvailableError as exc:
        code, message = EXIT_OFFLINE, str(exc)
    except DownloadError as exc:
        code, message = EXIT_DOWNLOAD, str(exc)
    except WeightsVerificationError as exc:
        code, message = EXIT_VERIFY, str(exc)
    except WeightsError as exc:  # pragma: no cover - every subclass is handled above
        code, message = 1, str(exc)
    sys.stderr.write(f"napari-focsam: error: {message}\n")
    return code
