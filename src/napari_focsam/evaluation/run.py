"""A NoC evaluation run: model(s) x dataset -> ``per_sample.csv`` and ``summary.json``.

`run_noc` is a generator: it yields `NocProgress` after every sample (stop iterating, or close
it, to cancel: nothing is written then) and returns the `NocReport` when the files are
written (``report = yield from run_noc(...)``, or `drain`). Every sample gets its own clicker
generator seeded by ``(seed, sample index)``, so two models evaluated with the same seed get the
same first click on every sample, and later clicks differ only where their masks differ.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import secrets
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .dataset_files import DatasetError
from .datasets import Dataset, open_dataset
from .noc import DEFAULT_THRESHOLDS, SampleResult, evaluate_sample, noc_label, summarize

__all__ = ["NocProgress", "NocReport", "drain", "run_noc"]

logger = logging.getLogger(__name__)

PROTOCOL = ("FocSAM NoC: click at the maximum of the exact EDT of the larger error region "
            "(image border = background, ties negative, clicked pixels excluded), all clicks "
            "and the previous logits sent every step, IoU after each click; void pixels "
            "(GrabCut's unknown band, label 255) are background unless void='ignore'")


@dataclass(frozen=True)
class NocProgress:
    """Progress of `run_noc`.

    Attributes
    ----------
    model : str
        The model being evaluated.
    done, total : int
        Samples evaluated so far and planned, over all models.
    sample : str or None
        The sample just finished (None for the first report).
    """

    model: str
    done: int
    total: int
    sample: str | None = None


@dataclass(frozen=True)
class NocReport:
    """What `run_noc` wrote.

    Attributes
    ----------
    summary : dict
        The content of ``summary.json``.
    per_sample_csv, summary_json : Path
        The files.
    """

    summary: dict
    per_sample_csv: Path
    summary_json: Path


# ---------------------------------------------------------------------- run
def drain(progress: Generator):
    """Run a progress generator to its end and return its return value."""
    while True:
        try:
            next(progress)
        except StopIteration as stop:
            return stop.value


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The clicker generator of sample `index` (the same for every model)."""
    return np.random.default_rng([int(seed), int(index)])


def _evaluate_model(model_id: str, weights, data: Dataset, *, device, dtype, offline, seed: int,
                    max_clicks: int, thresholds: tuple[float, ...], counter: list[int], total: int):
    """Evaluate one model on every sample (a generator returning (loaded, results, skipped))."""
    from ..api.models import load_model

    loaded = load_model(model_id, weights=weights, device=device, dtype=dtype,
                        role="interactive", offline=offline, seed=seed)
    predictor = loaded.interactive_predictor()
    results: list[SampleResult] = []
    skipped: list[str] = []
    for index, ref in enumerate(data.refs):
        sample = data[index]
        if not np.any(sample.gt if sample.ignore is None else sample.gt & ~sample.ignore):
            logger.warning("%s: empty object, skipped", ref.name)
            skipped.append(ref.name)
        else:
            results.append(evaluate_sample(predictor, sample.image, sample.gt, max_clicks,
                                           thresholds, sample_rng(seed, index),
                                           ignore=sample.ignore, name=ref.name))
        counter[0] += 1
        yield NocProgress(model_id, counter[0], total, ref.name)
    return loaded, results, skipped


def _model_summary(loaded, results: Sequence[SampleResult]) -> dict:
    return {"model": loaded.model_id, "family": loaded.family.name, "weights": loaded.weights,
            "device": str(loaded.device), "dtype": str(loaded.dtype).replace("torch.", ""),
            **summarize(results)}


def _csv_text(dataset: str, per_model: Sequence[tuple[str, Sequence[SampleResult]]],
              thresholds: Sequence[float], max_clicks: int) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "dataset", "sample", *(noc_label(t) for t in thresholds),
                     *(f"iou_{k}" for k in range(1, max_clicks + 1))])
    for model_id, results in per_model:
        for r in results:
            writer.writerow([model_id, dataset, r.name, *r.noc, *(f"{v:.6f}" for v in r.ious)])
    return buf.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file next to `path`, then rename it over `path`."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.part"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_noc(
    model_id: str,
    dataset: str,
    root: str | Path,
    *,
    weights: str | Path | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    max_clicks: int = 20,
    limit: int | None = None,
    seed: int = 0,
    out_dir: str | Path,
    iou_thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    compare: str | None = None,
    compare_weights: str | Path | None = None,
    offline: bool | None = None,
    void: str = "background",
) -> Generator[NocProgress, None, NocReport]:
    """Evaluate an interactive model (and optionally a second one) with the NoC protocol.

    Parameters
    ----------
    model_id : str
        Registry id or config name (SAM, FocSAM or SAM 2; see
        `napari_focsam.api.models.load_model`).
    dataset : str
        Dataset kind (see `napari_focsam.evaluation.datasets.DATASETS`).
    root : str or Path
        Dataset folder.
    weights : str, Path or None
        Checkpoint of `model_id`; ``"random"`` for random weights; None: the registry's.
    device, dtype : str or torch.device / torch.dtype
        As in `load_model`.
    max_clicks : int
        Clicks per object.
    limit : int or None
        Evaluate the first `limit` samples only.
    seed : int
        Seed of the clicker's tie-breaking (and of random weights).
    out_dir : str or Path
        Folder of ``per_sample.csv`` and ``summary.json`` (created; files replaced).
    iou_thresholds : sequence of float
        NoC thresholds.
    compare : str or None
        A second model evaluated on the same samples with the same seed.
    compare_weights : str, Path or None
        Checkpoint of `compare`.
    offline : bool or None
        Never download weights.
    void : {"background", "ignore"}
        What void pixels are: background (FocSAM's test loop, for figures comparable with the
        paper) or left out of the IoU and the clicks (RITM).

    Yields
    ------
    NocProgress
        After every sample of every model (and once before the first).

    Returns
    -------
    NocReport
        The summary and the files written.

    Raises
    ------
    napari_focsam.evaluation.datasets.DatasetError
        Missing or malformed dataset.
    napari_focsam.families.ModelChoiceError
        Unknown model.
    ValueError
        Bad settings.
    """
    from ..families import family_of

    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    thresholds = tuple(float(t) for t in iou_thresholds)
    if not thresholds or not all(0.0 < t <= 1.0 for t in thresholds):
        raise ValueError(f"IoU thresholds must be in (0, 1], got {thresholds}")
    models: list[tuple[str, str | Path | None]] = [(model_id, weights)]
    if compare is not None:
        models.append((compare, compare_weights))
    for mid, _ in models:
        family_of(mid)  # unknown ids fail before any work
    data = open_dataset(dataset, root, limit=limit, void=void)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = len(data) * len(models)
    counter = [0]
    yield NocProgress(model_id, 0, total)

    summaries: list[dict] = []
    per_model: list[tuple[str, list[SampleResult]]] = []
    skipped: list[str] = []
    for mid, w in models:
        loaded, results, skipped = yield from _evaluate_model(
            mid, w, data, device=device, dtype=dtype, offline=offline, seed=seed,
            max_clicks=max_clicks, thresholds=thresholds, counter=counter, total=total)
        if not results:
            raise DatasetError(f"every sample of {data.root} has an empty object")
        summaries.append(_model_summary(loaded, results))
        per_model.append((mid, results))
        del loaded

    settings = {"max_clicks": max_clicks, "iou_thresholds": list(thresholds), "seed": seed,
                "limit": limit, "void": void, "device": str(device),
                "dtype": str(dtype).replace("torch.", ""),
                "protocol": PROTOCOL}
    summary = {**summaries[0], "dataset": data.name, "dataset_dir": str(data.root),
               "skipped": skipped, "settings": settings}
    if compare is not None:
        summary["compare"] = summaries[1]
    csv_path, json_path = out / "per_sample.csv", out / "summary.json"
    _write_atomic(csv_path, _csv_text(data.name, per_model, thresholds, max_clicks))
    _write_atomic(json_path, json.dumps(summary, indent=2) + "\n")
    logger.info("NoC results written to %s and %s", csv_path, json_path)
    return NocReport(summary, csv_path, json_path)
