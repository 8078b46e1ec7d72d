"""Interactive-segmentation evaluation with the FocSAM protocol (numpy / torch, no napari).

- :mod:`.clicker` -- the simulated user: the next click from the error regions,
- :mod:`.noc` -- clicks and IoUs of one object, NoC@85/90/95, mIoU@k and failures,
- :mod:`.datasets` -- readers of GrabCut, Berkeley, DAVIS, SBD, COD10K, MVTec AD and plain
  image / mask folders (file reading and mask decoding in :mod:`.dataset_files`),
- :mod:`.run` -- a whole run (one model, or two to compare) -> ``per_sample.csv`` and
  ``summary.json``, as a cancellable progress generator,
- :mod:`.stack`, :mod:`.stack_prompts` -- propagation quality on label stacks (per-frame IoU,
  mean J, drift) and simulated clicks from ground truth.
"""

from .clicker import Click, error_distance, next_click
from .dataset_files import DatasetError
from .datasets import DATASETS, Dataset, Sample, open_dataset
from .noc import (
    DEFAULT_THRESHOLDS,
    SampleResult,
    evaluate_sample,
    mask_iou,
    noc_label,
    number_of_clicks,
    summarize,
)
from .run import NocProgress, NocReport, drain, run_noc
from .stack import ObjectScore, StackScore, evaluate_stack, write_stack_report

__all__ = [
    "ObjectScore",
    "StackScore",
    "evaluate_stack",
    "write_stack_report",
    "DATASETS",
    "DEFAULT_THRESHOLDS",
    "Click",
    "Dataset",
    "DatasetError",
    "NocProgress",
    "NocReport",
    "Sample",
    "SampleResult",
    "drain",
    "error_distance",
    "evaluate_sample",
    "mask_iou",
    "next_click",
    "noc_label",
    "number_of_clicks",
    "open_dataset",
    "run_noc",
    "summarize",
]
