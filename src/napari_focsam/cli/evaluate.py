"""``napari-focsam evaluate``: NoC@85/90/95 and mIoU@k of an interactive model with the
FocSAM click protocol on a standard dataset layout."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from .common import device_options, model_options, quiet_option, set_command, show_progress

__all__ = ["add_parser", "run"]


class _DatasetNames:
    """``choices`` of ``--dataset``, read from `evaluation.datasets.DATASETS` when argparse
    first looks (the evaluation package imports torch: not for ``napari-focsam weights``)."""

    def _names(self) -> tuple[str, ...]:
        from ..evaluation.datasets import DATASETS

        return tuple(DATASETS)

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the ``napari-focsam`` subcommands; returns its parser."""
    p = subparsers.add_parser(
        "evaluate", help="NoC@85/90/95 and mIoU@k of an interactive model on a dataset",
        description="Simulated clicks (FocSAM protocol) on every object of a dataset; writes "
                    "per_sample.csv and summary.json to --out.",
        parents=[model_options(default=None), device_options(), quiet_option()])
    p.add_argument("--dataset", required=True, type=str.lower, choices=_DatasetNames(),
                   metavar="NAME", help="dataset layout: %(choices)s")
    p.add_argument("--dataset-dir", required=True, type=Path, help="dataset folder")
    p.add_argument("--out", required=True, type=Path,
                   help="folder for per_sample.csv and summary.json")
    p.add_argument("--max-clicks", type=_positive_int, default=20, help="clicks per object (20)")
    p.add_argument("--limit", type=_positive_int, default=None,
                   help="evaluate the first N samples only")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the clicker's tie-breaking and of random weights (0)")
    p.add_argument("--void", choices=("background", "ignore"), default="background",
                   help="void pixels (GrabCut's unknown band, label 255): background as in "
                        "FocSAM's test loop, for figures comparable with the paper (default), or "
                        "left out of the IoU and the clicks as in RITM")
    p.add_argument("--compare", default=None, metavar="MODEL",
                   help="a second model run on the same samples with the same seed")
    p.add_argument("--compare-weights", default=None,
                   help="checkpoint file of --compare ('random' for random weights)")
    set_command(p, run, interrupted="no results written")
    return p


def _format_summary(summary: dict) -> str:
    rows = [summary] + ([summary["compare"]] if "compare" in summary else [])
    nocs = [k for k in summary if k.startswith("NoC@") and not k.endswith("failures")]
    miou = summary["mIoU@k"]
    ks = [k for k in ("1", "5", "10", "20") if k in miou] or [next(iter(miou))]
    header = ["model", *nocs, *(f"mIoU@{k}" for k in ks), "NoC@90 failures"]
    lines = [f"{summary['dataset']}: {summary['n']} samples", "  ".join(header)]
    for r in rows:
        cells = [r["model"], *(f"{r[k]:.2f}" for k in nocs),
                 *(f"{r['mIoU@k'][k]:.4f}" for k in ks), str(r.get("NoC@90 failures", "-"))]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Evaluate ``--model`` (and ``--compare``); print the summary and where it was written."""
    from ..evaluation.run import run_noc

    progress = run_noc(args.model, args.dataset, args.dataset_dir, weights=args.weights,
                       device=args.device, dtype=args.dtype, max_clicks=args.max_clicks,
                       limit=args.limit, seed=args.seed, out_dir=args.out,
                       compare=args.compare, compare_weights=args.compare_weights,
                       offline=args.offline or None, void=args.void)
    report = show_progress(progress, quiet=args.quiet, unit="sample", label=lambda p: "evaluate",
                           postfix=lambda p: p.model)
    sys.stdout.write(_format_summary(report.summary) + "\n")
    sys.stdout.write(f"written: {report.per_sample_csv}, {report.summary_json}\n")
    return 0
