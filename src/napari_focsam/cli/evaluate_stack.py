"""``napari-focsam evaluate-stack``: per-frame IoU, mean J and drift of propagated objects
against a ground-truth label stack."""

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
        help="per-frame IoU, mean J and drift of propagated objects vs ground-truth labels",
        description="Score a predicted label stack (--pred), or run the models on --image with "
                    "one simulated click per ground-truth object and score the result.",
        parents=[model_options(propagation=True), device_options(), stack_kind_option()])
    p.add_argument("--gt", type=Path, required=True, help="ground-truth label stack (T, H, W)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", type=Path, help="predicted label stack to score")
    src.add_argument("--image", type=Path, help="image stack to segment and propagate")
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
        read_array,
        read_image_info,
        write_labels_tiff,
    )
    from ..evaluation.stack import check_ground_truth, evaluate_stack, write_stack_report

    inputs = [args.gt, args.pred, args.image]
    check_output_folder(args.out, inputs, option="--out")
    gt = read_array(args.gt, "the ground truth")
    check_ground_truth(gt, str(args.gt))
    settings: dict = {"gt": str(args.gt)}
    axes = info = None
    if args.pred is not None:
        pred = read_array(args.pred, "the prediction")
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
    out = write_stack_report(score, args.out, settings)
    if args.image is not None:
        write_labels_tiff(out / "pred_labels.tif", pred, axes=axes, info=info)
    sys.stdout.write(f"mean J {score.mean_j:.4f} over {len(score.objects)} objects; "
                     f"{len(score.false_positive_ids)} unmatched predictions; report in {out}\n")
    return 0
