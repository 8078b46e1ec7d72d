"""Cell Tracking Challenge (CTC) files: gap splitting, atomic export, reading track tables.

A CTC result folder holds one ``maskTTT.tif`` per frame (uint16 labels; 3 digits when there
are fewer than 1000 frames, else 4) and ``res_track.txt`` with one ``L B E P`` line per track:
label, begin frame, end frame (inclusive), parent label (0: none). A track is one label in one
contiguous run of frames; an object that disappears and comes back continues as a new track
whose parent is the track before the gap. Ground-truth folders (``kind="GT"``) use
``man_trackTTT.tif`` and ``man_track.txt`` instead.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from pathlib import Path

import numpy as np

from ..errors import MissingFileError
from .table import TrackingError, TrackTable, check_label_stack, label_frames

__all__ = ["check_ctc_folder", "export_ctc", "export_labels_tiff", "read_ctc_tracks", "split_gaps"]

logger = logging.getLogger(__name__)

_NAMES = {"RES": ("mask", "res_track.txt"), "GT": ("man_track", "man_track.txt")}
_UINT16_MAX = np.iinfo(np.uint16).max


def _runs(frames: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous ``(first, last)`` runs of a sorted array of frame indices."""
    breaks = np.flatnonzero(np.diff(frames) > 1)
    starts = np.concatenate([[0], breaks + 1])
    stops = np.concatenate([breaks, [frames.size - 1]])
    return [(int(frames[a]), int(frames[b])) for a, b in zip(starts, stops, strict=True)]


def split_gaps(
    labels: np.ndarray,
    table: TrackTable | None = None,
) -> tuple[np.ndarray, TrackTable]:
    """Give every run of an id after a gap a fresh id, its parent being the run before.

    Parameters
    ----------
    labels : numpy.ndarray
        ``T x H x W`` (or ``T x Z x Y x X``) integer label stack, 0 is background.
    table : TrackTable or None
        Parent links (divisions) to keep. Begin / end frames always come from `labels`; ids of
        `table` that are not in `labels` are left out with a warning.

    Returns
    -------
    labels : numpy.ndarray
        A relabelled copy of `labels` (same shape; same dtype unless the new ids do not fit
        it, then int64; `labels` itself if nothing was split): the first run of each id
        keeps it, each later run gets a new id above every id in `labels` and `table`,
        assigned in order of (original id, run).
    table : TrackTable
        One track per contiguous run. A continuation's parent is the run before its gap; a
        child of an original id (a daughter in `table`) is re-attached to the last run that
        ends before the child begins.

    Raises
    ------
    ValueError
        Bad `labels` (see `label_frames`).
    """
    labels = check_label_stack(labels)
    frames = label_frames(labels)
    source = table if table is not None else TrackTable()
    out = source.restricted_to(frames)
    divisions = dict(out.parents)  # child -> parent, before continuation links are added
    next_id = max([0, *frames, *source.begin]) + 1
    segments: dict[int, list[tuple[int, int, int]]] = {}  # original id -> [(id, first, last)]
    relabel: list[tuple[int, int, int, int]] = []  # (old id, new id, first, last)
    for label_id, present in frames.items():
        runs = _runs(present)
        segments[label_id] = [(label_id, *runs[0])]
        out.end[label_id] = runs[0][1]
        previous = label_id
        for first, last in runs[1:]:
            new_id, next_id = next_id, next_id + 1
            segments[label_id].append((new_id, first, last))
            relabel.append((label_id, new_id, first, last))
            out.begin[new_id], out.end[new_id] = first, last
            out.parents[new_id] = previous
            previous = new_id
    if not relabel:
        return labels, out
    # daughters of a split id hang from its last run that ends before they begin
    for child, parent in divisions.items():
        before = [s for s in segments[parent] if s[2] < out.begin[child]]
        if before:
            out.parents[child] = before[-1][0]
    if next_id - 1 > np.iinfo(labels.dtype).max:
        labels = labels.astype(np.int64)
    else:
        labels = labels.copy()
    for old, new, first, last in relabel:
        block = labels[first : last + 1]
        block[block == old] = new
        logger.info("track %d reappears at frame %d after a gap: continued as track %d", old, first, new)
    return labels, out


def _tmp_sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(6)}.{tag}"


def check_ctc_folder(out_dir: str | Path, kind: str = "RES", *, overwrite: bool = False) -> None:
    """Whether `export_ctc` may write `out_dir`: new, empty, or (with `overwrite`) holding only
    an earlier CTC result of `kind` (its mask TIFFs and track file).

    Raises
    ------
    FileExistsError
        `out_dir` is a file, holds other files, or holds a result and `overwrite` is False.
    ValueError
        Bad `kind`.
    """
    if kind not in _NAMES:
        raise ValueError(f"kind must be one of {sorted(_NAMES)}, got {kind!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    prefix, txt_name = _NAMES[kind]
    result = re.compile(rf"^({re.escape(prefix)}\d+\.tif|{re.escape(txt_name)})$")
    others = sorted(p.name for p in out_dir.iterdir() if not result.match(p.name))
    if others:
        raise FileExistsError(f"{out_dir} holds files other than a CTC {kind} result (e.g. "
                              f"{others[0]}): choose an empty or new folder")
    if not overwrite:
        raise FileExistsError(f"{out_dir} holds a CTC {kind} result; pass overwrite=True to "
                              "replace it")


def export_ctc(
    labels: np.ndarray,
    out_dir: str | Path,
    table: TrackTable | None = None,
    *,
    kind: str = "RES",
    overwrite: bool = False,
    compression: str | None = None,
) -> Path:
    """Write a label stack and its lineage as a Cell Tracking Challenge folder, atomically.

    Gaps are split first (`split_gaps`): an id that disappears and comes back continues as a
    new track whose parent is the earlier one. Everything is written to a temporary folder
    next to `out_dir` that becomes `out_dir` only once complete; a failed write leaves no
    partial folder behind.

    Parameters
    ----------
    labels : numpy.ndarray
        ``T x H x W`` (or ``T x Z x Y x X``) integer label stack, 0 is background. Ids (after
        gap splitting) must fit uint16.
    out_dir : str or pathlib.Path
        Folder to create, e.g. ``01_RES``.
    table : TrackTable or None
        Parent links (divisions, e.g. from `TrackTable.divide`). Begin / end frames are taken
        from `labels`. None: no divisions.
    kind : {"RES", "GT"}
        ``"RES"``: ``maskTTT.tif`` + ``res_track.txt``; ``"GT"``: ``man_trackTTT.tif`` +
        ``man_track.txt``.
    overwrite : bool
        Replace an earlier result of the same `kind` in `out_dir` (a folder holding only its
        mask TIFFs and track file). An empty existing folder is always replaced; a folder
        holding other files never is.
    compression : str or None
        TIFF compression of the masks (e.g. ``"zlib"``); None writes them uncompressed, which
        every CTC evaluation tool reads.

    Returns
    -------
    pathlib.Path
        `out_dir`.

    Raises
    ------
    FileExistsError
        `out_dir` exists and is not an empty folder, and `overwrite` is False; it holds files
        other than a CTC result of `kind`; or it is a file.
    ValueError
        Bad `kind` or `labels`, ids that do not fit uint16, or a lineage that breaks the CTC
        rules (a parent still present in or after its daughter's first frame).
    """
    if kind not in _NAMES:
        raise ValueError(f"kind must be one of {sorted(_NAMES)}, got {kind!r}")
    import tifffile

    out_dir = Path(out_dir)
    check_ctc_folder(out_dir, kind, overwrite=overwrite)
    labels = check_label_stack(labels, min_ndim=3)
    labels, tracks = split_gaps(labels, table)
    tracks.validate()
    if tracks.ids and tracks.ids[-1] > _UINT16_MAX:
        raise TrackingError(f"CTC masks are uint16; track id {tracks.ids[-1]} does not fit")

    prefix, txt_name = _NAMES[kind]
    digits = 3 if labels.shape[0] < 1000 else 4
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(out_dir, "part")
    tmp.mkdir()
    try:
        for t in range(labels.shape[0]):
            tifffile.imwrite(tmp / f"{prefix}{t:0{digits}d}.tif",
                             np.ascontiguousarray(labels[t], dtype=np.uint16),
                             photometric="minisblack", compression=compression)
        lines = tracks.to_ctc_lines()
        (tmp / txt_name).write_text("".join(line + "\n" for line in lines), encoding="ascii")
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote CTC %s folder %s: %d frames, %d tracks", kind, out_dir, labels.shape[0], len(tracks))
    return out_dir


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished folder `src` to `dst`, replacing an existing `dst` folder."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = _tmp_sibling(dst, "old")
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_ctc_tracks(path: str | Path) -> TrackTable:
    """Read a CTC track file (``res_track.txt`` / ``man_track.txt``) into a `TrackTable`.

    Parameters
    ----------
    path : str or pathlib.Path
        The text file, or a CTC folder holding ``res_track.txt`` or ``man_track.txt``.

    Returns
    -------
    TrackTable

    Raises
    ------
    FileNotFoundError
        No such file, or a folder without a track file.
    ValueError
        A line that is not four integers ``L B E P``, or a label listed twice.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / name for _, name in _NAMES.values() if (path / name).is_file()]
        if not candidates:
            raise MissingFileError(f"{path} holds neither res_track.txt nor man_track.txt")
        path = candidates[0]
    rows = []
    for number, line in enumerate(path.read_text(encoding="ascii").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 4:
                raise ValueError
            rows.append([int(f) for f in fields])
        except ValueError:
            raise TrackingError(f"{path}:{number}: expected 'L B E P' (four integers), got {line!r}") \
                from None
    return TrackTable.from_rows(rows)


def export_labels_tiff(labels: np.ndarray, path: str | Path) -> Path:
    """Write a time-lapse's labels as one ImageJ hyperstack TIFF (``TYX`` or ``TZYX``),
    atomically (uint16 where the ids fit; see :func:`napari_focsam.api.io.write_labels_tiff`).

    Parameters
    ----------
    labels : numpy.ndarray
        ``T x H x W`` or ``T x Z x H x W`` integer labels (2D labels are written as ``YX``).
    path : str or pathlib.Path
        Output ``.tif`` file.

    Returns
    -------
    pathlib.Path
        `path`.
    """
    from napari_focsam.api.io import write_labels_tiff

    labels = np.asarray(labels)
    axes = {3: "TYX", 4: "TZYX"}.get(labels.ndim)
    return write_labels_tiff(path, labels, axes=axes)
