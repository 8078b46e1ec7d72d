"""Cell Tracking Challenge measures of a tracking result, computed with py-ctcmetrics.

- **DET** -- detection accuracy: 1 - normalised cost of the graph operations that fix the
  detections (split, add, delete nodes),
- **SEG** -- mean Jaccard index of ground-truth objects with their match (IoU > 0.5),
- **TRA** -- tracking accuracy: 1 - normalised AOGM (nodes and edges, links included),
- **divisions** -- true / false positive and false negative mitoses with a temporal tolerance
  of ``i`` frames, their precision, recall and the CTC branching correctness ``BC(i)`` (F1).

Both sides are CTC folders (written from label stacks with
:func:`napari_focsam.tracking.export_ctc` when they are arrays), so the figures are those of
the challenge's own evaluation code.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..tracking import TrackingError, TrackTable, export_ctc, read_ctc_tracks

__all__ = ["CtcScores", "DivisionScore", "read_ctc_folder", "score_ctc_folders", "score_tracks"]

logger = logging.getLogger(__name__)

#: Largest temporal tolerance (frames) for which division scores are reported.
MAX_DIVISION_TOLERANCE = 3
_AOGM_PARTS = ("NS", "FN", "FP", "ED", "EA", "EC")


@dataclass(frozen=True)
class DivisionScore:
    """Mitoses matched with a temporal tolerance of `tolerance` frames.

    Attributes
    ----------
    tolerance : int
        Frames a division (mother's end, daughters' start) may be off.
    true_positive, false_positive, false_negative : int
        Matched, spurious and missed divisions.
    """

    tolerance: int
    true_positive: int
    false_positive: int
    false_negative: int

    @property
    def precision(self) -> float | None:
        """Matched / predicted divisions (None without predicted divisions)."""
        n = self.true_positive + self.false_positive
        return self.true_positive / n if n else None

    @property
    def recall(self) -> float | None:
        """Matched / ground-truth divisions (None without ground-truth divisions)."""
        n = self.true_positive + self.false_negative
        return self.true_positive / n if n else None

    @property
    def f1(self) -> float | None:
        """Branching correctness ``BC(i)``: F1 of precision and recall (None without any division)."""
        n = 2 * self.true_positive + self.false_positive + self.false_negative
        return 2 * self.true_positive / n if n else None


@dataclass(frozen=True)
class CtcScores:
    """CTC measures of one sequence.

    Attributes
    ----------
    det, tra : float
        Detection and tracking accuracy in [0, 1].
    seg : float or None
        Segmentation accuracy in [0, 1] (None: the ground truth has no SEG annotations).
    aogm : float
        Weighted cost of the graph operations that turn the result into the ground truth.
    aogm_operations : dict of str to int
        Counts of those operations: ``NS`` split nodes, ``FN`` / ``FP`` missing / spurious
        nodes, ``ED`` / ``EA`` / ``EC`` edges to delete / add / change semantics.
    divisions : tuple of DivisionScore
        One per tolerance 0 ... `MAX_DIVISION_TOLERANCE`.
    n_frames, n_gt_tracks, n_pred_tracks, n_gt_divisions : int
        Sequence length and sizes of the two lineages.
    """

    det: float
    seg: float | None
    tra: float
    aogm: float
    aogm_operations: dict[str, int]
    divisions: tuple[DivisionScore, ...]
    n_frames: int
    n_gt_tracks: int
    n_pred_tracks: int
    n_gt_divisions: int
    settings: dict = field(default_factory=dict)

    def division(self, tolerance: int) -> DivisionScore:
        """Division scores at `tolerance` frames (0 ... `MAX_DIVISION_TOLERANCE`)."""
        for score in self.divisions:
            if score.tolerance == tolerance:
                return score
        raise ValueError(f"division tolerance must be 0 ... {MAX_DIVISION_TOLERANCE}, got {tolerance}")

    def to_dict(self) -> dict:
        """JSON-ready dict (division precision / recall / F1 included)."""
        out = asdict(self)
        out["divisions"] = [
            {**asdict(d), "precision": d.precision, "recall": d.recall, "bc": d.f1}
            for d in self.divisions
        ]
        return out

    def summary(self, tolerance: int = 1) -> str:
        """One line: DET, SEG, TRA and division precision / recall at `tolerance` frames."""
        d = self.division(tolerance)
        seg = "n/a" if self.seg is None else f"{self.seg:.4f}"

        def fmt(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        return (f"DET {self.det:.4f}  SEG {seg}  TRA {self.tra:.4f}  divisions (±{tolerance} "
                f"frame{'s' if tolerance != 1 else ''}): precision {fmt(d.precision)} recall "
                f"{fmt(d.recall)} of {self.n_gt_divisions}")


def _tracks_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise TrackingError(f"{folder} is not a CTC folder: {name} is missing")
    return path


def _mask_files(folder: Path, prefix: str) -> list[Path]:
    files = sorted(p for p in folder.glob(f"{prefix}*.tif") if p.stem[len(prefix):].isdigit())
    if not files:
        raise TrackingError(f"{folder} holds no {prefix}TTT.tif masks")
    numbers = [int(p.stem[len(prefix):]) for p in files]
    if numbers != list(range(len(files))):
        raise TrackingError(f"{folder}: {prefix}TTT.tif masks must be numbered 0 ... {len(files) - 1} "
                            f"without gaps")
    return files


def _ground_truth_dirs(gt_dir: Path) -> tuple[Path, Path | None]:
    """``(TRA folder, SEG folder or None)`` of a CTC ground truth (``01_GT`` or its ``TRA``)."""
    if (gt_dir / "TRA").is_dir():
        tra = gt_dir / "TRA"
    elif (gt_dir / "man_track.txt").is_file():
        tra = gt_dir
    else:
        raise TrackingError(f"{gt_dir} is not a CTC ground truth: it holds neither TRA/ nor man_track.txt")
    seg = tra.parent / "SEG"
    has_seg = seg.is_dir() and any(seg.glob("man_seg*.tif"))
    return tra, seg if has_seg else None


def read_ctc_folder(path: str | Path) -> tuple[np.ndarray, TrackTable]:
    """Read a CTC result (``01_RES``) or ground-truth (``01_GT`` or ``01_GT/TRA``) folder.

    Parameters
    ----------
    path : str or pathlib.Path
        The folder.

    Returns
    -------
    labels : numpy.ndarray
        ``T x H x W`` (or ``T x Z x Y x X``) uint16 track labels.
    table : TrackTable
        The lineage of ``res_track.txt`` / ``man_track.txt``.

    Raises
    ------
    TrackingError
        Not a CTC folder, masks missing or numbered with gaps, masks of different shapes.
    """
    import tifffile

    folder = Path(path)
    if not folder.is_dir():
        raise TrackingError(f"{folder} is not a folder")
    if (folder / "res_track.txt").is_file():
        prefix, txt = "mask", folder / "res_track.txt"
    else:
        tra, _ = _ground_truth_dirs(folder)
        prefix, txt, folder = "man_track", _tracks_file(tra, "man_track.txt"), tra
    frames = [tifffile.imread(p) for p in _mask_files(folder, prefix)]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise TrackingError(f"{folder}: masks of different shapes {sorted(shapes)}")
    return np.stack(frames), read_ctc_tracks(txt)


def score_ctc_folders(res_dir: str | Path, gt_dir: str | Path) -> CtcScores:
    """CTC measures of a result folder against a ground-truth folder.

    Parameters
    ----------
    res_dir : str or pathlib.Path
        ``01_RES``: ``maskTTT.tif`` and ``res_track.txt``.
    gt_dir : str or pathlib.Path
        ``01_GT`` holding ``TRA/`` (``man_trackTTT.tif``, ``man_track.txt``) and optionally
        ``SEG/`` (``man_segTTT.tif``, any subset of frames), or the ``TRA`` folder itself.

    Returns
    -------
    CtcScores

    Raises
    ------
    TrackingError
        A folder that is not a CTC folder, different frame counts, or a result that breaks the
        CTC rules (labels outside their track's frames, bad parent links).
    """
    from ctc_metrics.scripts.evaluate import calculate_metrics, load_data

    res_dir, gt_dir = Path(res_dir), Path(gt_dir)
    if not res_dir.is_dir():
        raise TrackingError(f"the result {res_dir} is not a folder")
    if not gt_dir.is_dir():
        raise TrackingError(f"the ground truth {gt_dir} is not a folder")
    _tracks_file(res_dir, "res_track.txt")
    n_res = len(_mask_files(res_dir, "mask"))
    tra, seg = _ground_truth_dirs(gt_dir)
    _tracks_file(tra, "man_track.txt")
    n_gt = len(_mask_files(tra, "man_track"))
    if n_res != n_gt:
        raise TrackingError(f"the result has {n_res} frames, the ground truth {n_gt}")
    # py-ctcmetrics expects <seq>_GT/TRA and <seq>_GT/SEG; give it exactly that layout
    with tempfile.TemporaryDirectory(prefix="focsam-ctc-") as tmp:
        gt_root = Path(tmp) / "01_GT"
        gt_root.mkdir()
        (gt_root / "TRA").symlink_to(tra.resolve(), target_is_directory=True)
        if seg is not None:
            (gt_root / "SEG").symlink_to(seg.resolve(), target_is_directory=True)
        metrics = ["Valid", "DET", "TRA", "BC", f"BC({MAX_DIVISION_TOLERANCE})"]
        if seg is not None:
            metrics.append("SEG")
        chatter = io.StringIO()
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(chatter):
            warnings.simplefilter("always")
            comp, ref, traj, segm, _, is_valid = load_data(
                str(res_dir), str(gt_root), True, seg is not None, threads=1)
            results = calculate_metrics(comp, ref, traj, segm, metrics, is_valid)
    if chatter.getvalue().strip():
        logger.debug("py-ctcmetrics: %s", chatter.getvalue().strip())
    if not results.get("Valid"):
        reasons = "; ".join(str(w.message) for w in caught) or "see the CTC format rules"
        raise TrackingError(f"{res_dir} is not a valid CTC result: {reasons}")
    divisions = tuple(
        DivisionScore(i, int(results[f"tp_div({i})"]), int(results[f"fp_div({i})"]),
                      int(results[f"fn_div({i})"]))
        for i in range(MAX_DIVISION_TOLERANCE + 1))
    return CtcScores(
        det=float(results["DET"]),
        seg=None if seg is None else float(results["SEG"]),
        tra=float(results["TRA"]),
        aogm=float(results["AOGM"]),
        aogm_operations={k: int(results[f"AOGM_{k}"]) for k in _AOGM_PARTS},
        divisions=divisions,
        n_frames=n_res,
        n_gt_tracks=int(len(ref)),
        n_pred_tracks=int(len(comp)),
        n_gt_divisions=int(results["gt_divisions"]),
        settings={"result": str(res_dir), "ground_truth": str(gt_dir)},
    )


def score_tracks(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    pred_table: TrackTable | None = None,
    gt_table: TrackTable | None = None,
) -> CtcScores:
    """CTC measures of a tracked label stack against a ground-truth label stack.

    Parameters
    ----------
    pred_labels, gt_labels : numpy.ndarray
        ``T x H x W`` (or ``T x Z x Y x X``) integer label stacks of equal shape, 0 is
        background; an id is one object across frames.
    pred_table, gt_table : TrackTable or None
        Parent links (divisions). None: no divisions. Begin / end frames come from the labels;
        an id that disappears and comes back continues as a new track (`split_gaps`).

    Returns
    -------
    CtcScores
        SEG is computed on every ground-truth frame.

    Raises
    ------
    TrackingError
        Shapes differ, labels are not integer stacks, ids beyond uint16, lineages that break
        the CTC rules.
    """
    pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
    if pred_labels.shape != gt_labels.shape:
        raise TrackingError(f"the prediction has shape {pred_labels.shape}, the ground truth "
                            f"{gt_labels.shape}")
    try:
        with tempfile.TemporaryDirectory(prefix="focsam-ctc-") as tmp:
            root = Path(tmp)
            export_ctc(pred_labels, root / "01_RES", pred_table, kind="RES")
            export_ctc(gt_labels, root / "01_GT" / "TRA", gt_table, kind="GT")
            _write_seg(gt_labels, root / "01_GT" / "SEG")
            scores = score_ctc_folders(root / "01_RES", root / "01_GT")
    except ValueError as exc:
        if isinstance(exc, TrackingError):
            raise
        raise TrackingError(str(exc)) from exc
    return replace(scores, settings={})


def _write_seg(labels: np.ndarray, folder: Path) -> None:
    """Every frame of `labels` as ``man_segTTT.tif`` (uint16, relabelled if ids do not fit)."""
    import tifffile

    folder.mkdir(parents=True)
    digits = 3 if labels.shape[0] < 1000 else 4
    for t in range(labels.shape[0]):
        frame = labels[t]
        if frame.size and frame.max() > np.iinfo(np.uint16).max:
            _, frame = np.unique(frame, return_inverse=True)
            frame = frame.reshape(labels.shape[1:])
        tifffile.imwrite(folder / f"man_seg{t:0{digits}d}.tif", frame.astype(np.uint16),
                         photometric="minisblack")
