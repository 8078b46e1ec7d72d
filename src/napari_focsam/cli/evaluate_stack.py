"""``napari-focsam evaluate-stack``: per-frame IoU, mean J and drift of propagated or tracked
objects against a ground-truth label stack, and the Cell Tracking Challenge measures (DET, SEG,
TRA, division precision / recall) of the result."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import device_options, model_options, set_command, stack_kind_option
from .segmenter import load_models

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``evaluate-stack`` to the ``napari-focsam`` subcommands; returns its parser."""
    p = subparsers.add_parser(
        "evaluate-stack",
        help="per-frame IoU, mean J, drift and CTC measures (DET, SEG, TRA, divisions) of a "
             "label stack vs ground truth",
        description="Score a predicted label stack or CTC result folder (--pred), or run the "
                    "models on --image with one simulated click per ground-truth object and "
                    "score the result. Reports mean J per object and the Cell Tracking "
                    "Challenge measures DET, SEG, TRA and division precision / recall "
                    "(py-ctcmetrics).",
        parents=[model_options(propagation=True), device_options(), stack_kind_option()])
    p.add_argument("--gt", type=Path, required=True,
                   help="ground-truth label stack (T, H, W) or CTC ground-truth folder (01_GT)")
    p.add_argument("--gt-lineage", type=Path,
                   help="lineage of a --gt label file: CTC track file (L B E P per line)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", type=Path,
                     help="predicted label stack or CTC result folder (01_RES) to score")
    src.add_argument("--image", type=Path, help="image stack to segment and propagate")
    p.add_argument("--pred-lineage", type=Path,
                   help="lineage of a --pred label file: CTC track file (L B E P per line)")
    p.add_argument("--no-ctc", dest="ctc", action="store_false",
                   help="skip the Cell Tracking Challenge measures")
    p.add_argument("--division-tolerance", type=int, default=1, choices=range(4), metavar="{0..3}",
                   help="frames a division may be off in the printed precision / recall "
                        "(summary.json has 0 to 3; default 1)")
    p.add_argument("--click-frame", choices=("largest", "first"), default="largest",
                   help="frame of each object's simulated click")
    p.add_argument("--out", type=Path, required=True, help="folder for per_frame.csv, summary.json")
    set_command(p, run, interrupted="no report written")
    return p


def run(args: argparse.Namespace) -> int:
    """Score ``--pred`` (or the labels propagated on ``--image``) against ``--gt``; write the
    report (and, with ``--image``, the predicted labels) to ``--out``."""
    from ..api.io import (
        check_output_folder,
        labels_axes,
        open_image,
        read_image_info,
        write_labels_tiff,
    )
    from ..evaluation.stack import check_ground_truth, evaluate_stack, write_stack_report

    inputs = [args.gt, args.pred, args.image, args.gt_lineage, args.pred_lineage]
    check_output_folder(args.out, inputs, option="--out")
    gt, gt_table = _read_labels(args.gt, args.gt_lineage, "the ground truth", "--gt-lineage")
    check_ground_truth(gt, str(args.gt))
    settings: dict = {"gt": str(args.gt)}
    axes = info = None
    pred_table = None
    if args.pred is not None:
        pred, pred_table = _read_labels(args.pred, args.pred_lineage, "the prediction",
                                        "--pred-lineage")
        settings["pred"] = str(args.pred)
        prompt_frames = None
    else:
        from ..api.segmenter import Segmenter
        from ..evaluation.stack_prompts import prompts_from_ground_truth

        prompts = prompts_from_ground_truth(gt, args.click_frame)
        image = open_image(args.image)
        interactive, propagation = load_models(args, with_propagation=True)
        assert interactive is not None
        seg = Segmenter(image, interactive=interactive, propagation=propagation, stack_axis=0)
        for _ in seg.propagate(prompts, "both"):
            pass
        pred = seg.labels_in_data_order()
        prompt_frames = {p.obj_id: int(p.frame) for p in prompts}
        settings.update(image=str(args.image), model=args.model,
                        propagation_model=args.propagation_model, click_frame=args.click_frame)
        info = read_image_info(args.image)
        axes = labels_axes(len(seg.source.shape), stack_axis=0, file_axes=info.axes,
                           stack_kind=args.stack_kind)
    score = evaluate_stack(pred, gt, prompt_frames)
    ctc = None
    if args.ctc:
        from ..evaluation.ctc_scores import score_tracks

        ctc = score_tracks(pred, gt, pred_table, gt_table)
    out = write_stack_report(score, args.out, settings, ctc)
    if args.image is not None:
        write_labels_tiff(out / "pred_labels.tif", pred, axes=axes, info=info)
    sys.stdout.write(f"mean J {score.mean_j:.4f} over {len(score.objects)} objects; "
                     f"{len(score.false_positive_ids)} unmatched predictions; report in {out}\n")
    if ctc is not None:
        sys.stdout.write(ctc.summary(args.division_tolerance) + "\n")
    return 0


def _read_labels(path: Path, lineage: Path | None, what: str, lineage_option: str):
    """``(labels, TrackTable or None)`` from a label file (+ CTC track file) or a CTC folder."""
    from ..api.io import read_array
    from ..errors import MissingFileError
    from ..evaluation.ctc_scores import read_ctc_folder
    from ..tracking import TrackingError, read_ctc_tracks

    if lineage is not None and not lineage.is_file():
        raise MissingFileError(f"{lineage_option} {lineage}: no such file")
    if path.is_dir():
        if lineage is not None:
            raise TrackingError(f"{lineage_option}: {path} is a CTC folder with its own track file")
        return read_ctc_folder(path)
    labels = read_array(path, what)
    return labels, None if lineage is None else read_ctc_tracks(lineage)
