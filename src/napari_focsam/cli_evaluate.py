"""``napari-focsam evaluate``: NoC of an interactive model on a benchmark dataset.

Exit codes: 0 done; 2 bad input (dataset folder, model choice, checkpoint file, settings);
3-5 weights problems (as ``weights``: download, verification, offline); 130 interrupted
(nothing written).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .cli_errors import EXIT_OK, run_with_exit_codes

__all__ = ["add_evaluate_parser", "run_evaluate"]

logger = logging.getLogger(__name__)



def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the ``napari-focsam`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``parser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
        The ``evaluate`` parser.
    """
    from .evaluation.datasets import DATASETS

    p = subparsers.add_parser(
        "evaluate", help="NoC@85/90/95 and mIoU@k of an interactive model on a dataset",
        description="Simulated clicks (FocSAM protocol) on every object of a dataset; writes "
                    "per_sample.csv and summary.json to --out.")
    p.add_argument("--model", required=True,
                   help="interactive model: registry id (see 'weights list') or config name")
    p.add_argument("--weights", default=None,
                   help="checkpoint file of --model ('random' for random weights)")
    p.add_argument("--dataset", required=True, type=str.lower, choices=tuple(DATASETS),
                   help="dataset layout")
    p.add_argument("--dataset-dir", required=True, type=Path, help="dataset folder")
    p.add_argument("--out", required=True, type=Path,
                   help="folder for per_sample.csv and summary.json")
    p.add_argument("--max-clicks", type=_positive_int, default=20, help="clicks per object (20)")
    p.add_argument("--limit", type=_positive_int, default=None,
                   help="evaluate the first N samples only")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the clicker's tie-breaking and of random weights (0)")
    p.add_argument("--compare", default=None, metavar="MODEL",
                   help="a second model run on the same samples with the same seed")
    p.add_argument("--compare-weights", default=None,
                   help="checkpoint file of --compare ('random' for random weights)")
    p.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    p.add_argument("--dtype", default="auto", help="fp32, bf16, fp16 or auto")
    p.add_argument("--offline", action="store_true", help="never download weights")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
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


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .evaluation.run import run_noc

    progress = run_noc(args.model, args.dataset, args.dataset_dir, weights=args.weights,
                       device=args.device, dtype=args.dtype, max_clicks=args.max_clicks,
                       limit=args.limit, seed=args.seed, out_dir=args.out,
                       compare=args.compare, compare_weights=args.compare_weights,
                       offline=args.offline or None)
    bar = None
    try:
        while True:
            try:
                p = next(progress)
            except StopIteration as stop:
                report = stop.value
                break
            if bar is None:
                bar = tqdm(total=p.total, desc="evaluate", unit="sample", file=sys.stderr,
                           disable=args.quiet or None)
            bar.set_postfix_str(p.model, refresh=False)
            bar.update(p.done - bar.n)
    finally:
        if bar is not None:
            bar.close()
        progress.close()
    sys.stdout.write(_format_summary(report.summary) + "\n")
    sys.stdout.write(f"written: {report.per_sample_csv}, {report.summary_json}\n")
    return EXIT_OK


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``evaluate``; returns the exit code (see the module docstring).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by the parser of `add_evaluate_parser`.

    Returns
    -------
    int
    """
    return run_with_exit_codes(lambda: _run(args), "no results written")
