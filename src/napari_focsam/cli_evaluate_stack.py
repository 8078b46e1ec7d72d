"""``napari-focsam evaluate-stack``: propagation quality against ground-truth label stacks."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .cli_errors import EXIT_OK, run_with_exit_codes

__all__ = ["add_evaluate_stack_parser", "run_evaluate_stack"]

logger = logging.getLogger(__name__)


def add_evaluate_stack_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate-stack`` to the ``napari-focsam`` parser."""
    p = sub.add_parser(
        "evaluate-stack",
        help="per-frame IoU, mean J and drift of propagated objects vs ground-truth labels",
        description="Score a predicted label stack (--pred), or run the models on --image with "
                    "one simulated click per ground-truth object and score the result.")
    p.add_argument("--gt", type=Path, required=True, help="ground-truth label stack (T, H, W)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", type=Path, help="predicted label stack to score")
    src.add_argument("--image", type=Path, help="image stack to segment and propagate")
    p.add_argument("--model", default="sam_vit_b", help="interactive model (with --image)")
    p.add_argument("--weights", default=None, help="its checkpoint ('random' for random weights)")
    p.add_argument("--propagation-model", default="sam2.1_hiera_tiny", help="SAM 2 model")
    p.add_argument("--propagation-weights", default=None, help="its checkpoint, or 'random'")
    p.add_argument("--click-frame", choices=("largest", "first"), default="largest",
                   help="frame of each object's simulated click")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--out", type=Path, required=True, help="folder for per_frame.csv, summary.json")


def run_evaluate_stack(args: argparse.Namespace) -> int:
    """Run ``evaluate-stack``; exit codes of `cli_errors.run_with_exit_codes` (0 done, 2 bad
    input, 3-5 weights, 130 interrupted)."""
    return run_with_exit_codes(lambda: _run(args), "no report written")


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from .api.io import open_image, write_labels_tiff
    from .evaluation.stack import evaluate_stack, write_stack_report

    gt = np.asarray(open_image(args.gt))
    settings: dict = {"gt": str(args.gt)}
    if args.pred is not None:
        pred = np.asarray(open_image(args.pred))
        settings["pred"] = str(args.pred)
        prompt_frames = None
    else:
        from .api.models import load_model
        from .api.segmenter import Segmenter
        from .evaluation.stack_prompts import prompts_from_ground_truth

        prompts = prompts_from_ground_truth(gt, args.click_frame)
        common = {"device": args.device, "dtype": args.dtype}
        interactive = load_model(args.model, weights=args.weights, role="interactive", **common)
        propagation = load_model(args.propagation_model, weights=args.propagation_weights,
                                 role="propagation", **common)
        seg = Segmenter(open_image(args.image), interactive=interactive,
                        propagation=propagation, stack_axis=0)
        for _ in seg.propagate(prompts, "both"):
            pass
        pred = seg.labels_in_data_order()
        prompt_frames = {p.obj_id: int(p.frame) for p in prompts}
        settings.update(image=str(args.image), model=args.model,
                        propagation_model=args.propagation_model, click_frame=args.click_frame)
    score = evaluate_stack(pred, gt, prompt_frames)
    out = write_stack_report(score, args.out, settings)
    if args.image is not None:
        write_labels_tiff(out / "pred_labels.tif", pred)
    sys.stdout.write(f"mean J {score.mean_j:.4f} over {len(score.objects)} objects; "
                     f"{len(score.false_positive_ids)} unmatched predictions; report in {out}\n")
    return EXIT_OK
