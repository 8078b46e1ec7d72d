"""What the ``napari-focsam`` commands share: their options (declared once, as argparse parent
parsers), how a parser names its command, and the progress bars.

Each ``*_options`` function returns a new parent parser (``add_help=False``): pass it in
``parents=[...]`` of a command's parser. New ones each time, because parents share their
argument objects with the parsers they are added to.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["HEAVY_IMPORTS", "axis_options", "cache_options", "device_options", "json_option", "model_options",
           "prompts_options", "quiet_option", "set_command", "show_progress", "stack_kind_option",
           "threads_option", "tiling_options"]

P = TypeVar("P")
R = TypeVar("R")

#: A command: parsed arguments in, exit code out.
Command = Callable[[argparse.Namespace], int]


#: What commands import before they run, with Ctrl-C held (see `exits.run_command`).
HEAVY_IMPORTS = ("torch", "napari_focsam.api")


def set_command(parser: argparse.ArgumentParser, func: Command, *,
                interrupted: str = "nothing written",
                preload: tuple[str, ...] = HEAVY_IMPORTS) -> None:
    """Make `parser` run ``func(args)`` (see `exits.run_command`).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        A (sub)command's parser.
    func : callable
        Runs the command; returns its exit code.
    interrupted : str
        What an interruption leaves behind, printed after ``interrupted;``.
    preload : tuple of str
        Modules imported before `func` runs, with Ctrl-C held until they are loaded (an
        interrupt inside torch's import aborts the interpreter); ``()`` for light commands.
    """
    during = " ".join(parser.prog.split()[1:])  # "napari-focsam weights list" -> "weights list"
    parser.set_defaults(func=func, during=during, interrupted=interrupted, preload=preload)


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def model_options(*, default: str | None = "sam_vit_b",
                  propagation: bool = False) -> argparse.ArgumentParser:
    """``--model``, ``--weights`` (and ``--propagation-model``, ``--propagation-weights``),
    ``--offline``. ``default=None`` makes ``--model`` required."""
    p = _parent()
    p.add_argument("--model", default=default, required=default is None,
                   help="interactive model: registry id (see 'weights list') or config name")
    p.add_argument("--weights", default=None,
                   help="checkpoint file of --model ('random' for random weights)")
    if propagation:
        p.add_argument("--propagation-model", default="sam2.1_hiera_tiny",
                       help="SAM 2 model carrying objects through the stack")
        p.add_argument("--propagation-weights", default=None,
                       help="checkpoint of --propagation-model ('random' for random weights)")
    p.add_argument("--offline", action="store_true", help="never download weights")
    return p


def device_options(*, default: str = "auto", dtype: bool = True) -> argparse.ArgumentParser:
    """``--device`` (and ``--dtype``)."""
    p = _parent()
    p.add_argument("--device", default=default, help=f"cpu, cuda, mps or auto (default {default})")
    if dtype:
        p.add_argument("--dtype", default="auto", help="fp32, bf16, fp16 or auto")
    return p


def threads_option() -> argparse.ArgumentParser:
    """``--threads``."""
    p = _parent()
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def json_option() -> argparse.ArgumentParser:
    """``--json PATH``: also write the figures there."""
    p = _parent()
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write the figures here")
    return p


def quiet_option() -> argparse.ArgumentParser:
    """``--quiet``: no progress bars."""
    p = _parent()
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _axis(text: str) -> int | str | None:
    if text.lower() in ("none", "-"):
        return None
    if text.lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an axis is an integer or 'none', got {text!r}") from None


def axis_options() -> argparse.ArgumentParser:
    """The ``input`` image or stack and its ``--axis``, ``--channel-axis``, ``--outer-axis``."""
    p = _parent()
    p.add_argument("input", type=Path, help="image or stack (TIFF, .npy, .zarr, PNG, JPEG)")
    p.add_argument("--axis", type=_axis, default="auto",
                   help="stack (z or t) axis of the data; 'none' for a 2D image (default: 0 "
                        "for 3D data without --channel-axis, else none; (H, W, 3 or 4) data is "
                        "an RGB(A) image; 4D and 5D data need the axes named)")
    p.add_argument("--channel-axis", type=_axis, default=None, help="channel axis, if any")
    p.add_argument("--outer-axis", type=_axis, default=None,
                   help="4D data: the other non-spatial axis (e.g. t when --axis is z)")
    return p


def stack_kind_option() -> argparse.ArgumentParser:
    """``--stack-kind z | t``: what the stack axis is when the input file does not say."""
    p = _parent()
    p.add_argument("--stack-kind", choices=("z", "t"), default="z", type=str.lower,
                   help="what the stack axis is when the input file does not say (ImageJ or "
                        "OME axes): z, slices of a volume (default), or t, frames of a "
                        "time-lapse; names the axes of the labels TIFF (ZYX or TYX; with "
                        "--outer-axis the outer axis is the other one, TZYX)")
    return p


def cache_options() -> argparse.ArgumentParser:
    """The embedding cache: ``--cache-dir``, ``--no-cache``, ``--cache-dtype``."""
    p = _parent()
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="embedding cache folder (default: $NAPARI_FOCSAM_CACHE_DIR or the user "
                        "cache dir)")
    p.add_argument("--no-cache", action="store_true", help="keep embeddings in RAM only")
    p.add_argument("--cache-dtype", choices=("float32", "float16"), default="float32",
                   help="disk cache precision")
    return p


def tiling_options() -> argparse.ArgumentParser:
    """Tiles for frames larger than the model input: ``--tiling``, ``--tile-size``,
    ``--tile-halo``."""
    p = _parent()
    p.add_argument("--tiling", choices=("auto", "on", "off"), default="auto", type=str.lower,
                   help="encode frames larger than the interactive model's input (1024 px) as "
                        "overlapping tiles at full resolution: auto (default: when a frame is "
                        "larger than the input), on (when larger than --tile-size), off (resize "
                        "every frame to the input, as SAM does). Propagation always uses whole "
                        "frames")
    p.add_argument("--tile-size", type=int, default=None, metavar="PX",
                   help="tile side in pixels (default: the model input, 1024)")
    p.add_argument("--tile-halo", type=int, default=None, metavar="PX",
                   help="context kept around every pixel; tiles overlap by twice this "
                        "(default: 1/8 of the tile, 128 px)")
    return p


def prompts_options(*, required: bool = True, optional_help: str = "") -> argparse.ArgumentParser:
    """``--prompts`` (CSV / JSON) in, ``--output`` labels TIFF out, ``--stack-kind``.

    ``required=False`` lets the command decide when ``--prompts`` is needed (its help then
    ends with `optional_help`)."""
    p = argparse.ArgumentParser(add_help=False, parents=[stack_kind_option()])
    p.add_argument("--prompts", type=Path, required=required, default=None,
                   help="CSV or JSON prompts file" + (f" ({optional_help})" if optional_help else ""))
    p.add_argument("--output", "-o", type=Path, required=True,
                   help="labels TIFF to write (.tif or .tiff; an ImageJ hyperstack with the "
                        "input's calibration; never one of the input files)")
    return p


def show_progress(progress: Generator[P, Any, R], *, quiet: bool,
                  unit: str | Callable[[P], str], label: Callable[[P], str],
                  postfix: Callable[[P], str] | None = None) -> R:
    """Run a progress generator to its end with a bar per `label` on stderr.

    Parameters
    ----------
    progress : generator
        Yields steps with ``done`` and ``total``; returns the result. Closed on the way out,
        so an interruption stops it where it is.
    quiet : bool
        No bars (they are also off when stderr is not a terminal).
    unit : str or callable
        What ``done`` counts (``"frame"``, ``"sample"``), or a step's unit.
    label, postfix : callable
        A step's bar name (one bar per name) and the text after its bar.

    Returns
    -------
    The generator's return value.
    """
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}
    try:
        while True:
            try:
                step = next(progress)
            except StopIteration as stop:
                return stop.value
            name = label(step)
            bar = bars.get(name)
            if bar is None:
                bar = bars[name] = tqdm(desc=name, unit=unit(step) if callable(unit) else unit,
                                        file=sys.stderr, disable=quiet or None)
            bar.total, bar.n = step.total, step.done
            if postfix is not None:
                bar.set_postfix_str(postfix(step), refresh=False)
            bar.refresh()
    finally:
        for bar in bars.values():
            bar.close()
        progress.close()
