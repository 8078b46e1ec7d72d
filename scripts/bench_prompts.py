"""Cost of many objects in a prompts file: time and peak memory of reading the file and of
``napari-focsam segment`` / ``propagate`` on tiny random-weight models.

Not a test (pytest does not collect it): a measurement to run by hand, e.g. ::

    .venv/bin/python scripts/bench_prompts.py --objects 50 250 --frames 3 --size 256
    .venv/bin/python scripts/bench_prompts.py --objects 250 --commands propagate --profile

Each (command, object count) runs in a fresh process on a warm embedding cache and prints its
wall time and peak resident memory (``ru_maxrss``) over that of the same command with one
object, and both per object. ``--profile`` prints the top of a cProfile instead.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

MODELS = ["--model", "sam_test_tiny", "--weights", "random", "--device", "cpu", "--dtype",
          "fp32", "--quiet"]
PROPAGATION = ["--propagation-model", "sam2_test_tiny", "--propagation-weights", "random"]


def write_inputs(folder: Path, n_objects: int, frames: int, size: int) -> tuple[Path, Path]:
    """A ``(frames, size, size)`` uint8 stack and a CSV with one point per object, spread over
    the frames and over the image."""
    rng = np.random.default_rng(0)
    stack = folder / "stack.tif"
    if not stack.exists():
        tifffile.imwrite(stack, rng.integers(0, 255, (frames, size, size), dtype=np.uint8),
                         photometric="minisblack")
    rows = ["object_id,frame,kind,row,col,label"]
    for obj in range(1, n_objects + 1):
        r, c = rng.integers(0, size, 2)
        rows.append(f"{obj},{obj % frames},point,{r},{c},1")
    prompts = folder / f"prompts{n_objects}.csv"
    prompts.write_text("\n".join(rows) + "\n")
    return stack, prompts


def run_one(command: str, stack: Path, prompts: Path, out: Path, profile: bool) -> None:
    """Run `command` in this process; print ``wall_s max_rss_kib``."""
    from napari_focsam.api.prompts_file import group_prompts, read_prompts
    from napari_focsam.cli import main as cli

    def go() -> None:
        if command == "read":
            group_prompts(read_prompts(prompts))
            return
        extra = PROPAGATION if command == "propagate" else []
        code = cli([command, str(stack), *MODELS, *extra, "--prompts", str(prompts), "-o",
                    str(out)])
        assert code == 0, code

    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(go)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
        sys.stderr.write(text.getvalue())
        return
    t0 = time.perf_counter()
    go()
    wall = time.perf_counter() - t0
    sys.stdout.write(f"{wall} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[50, 250])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--commands", nargs="+", default=["read", "segment", "propagate"])
    parser.add_argument("--profile", action="store_true", help="cProfile instead (top 30)")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)  # command stack prompts out
    args = parser.parse_args()
    if args.one:
        command, stack, prompts, out = args.one
        run_one(command, Path(stack), Path(prompts), Path(out), args.profile)
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {**os.environ, "NAPARI_FOCSAM_CACHE_DIR": str(folder / "cache")}
        stack, one = write_inputs(folder, 1, args.frames, args.size)
        subprocess.run([sys.executable, "-m", "napari_focsam", "embed", str(stack), *MODELS,
                        *PROPAGATION], env=env, check=True, capture_output=True)

        def child(command: str, prompts: Path) -> tuple[float, int]:
            argv = [sys.executable, __file__, "--one", command, str(stack), str(prompts),
                    str(folder / "labels.tif")] + (["--profile"] * args.profile)
            done = subprocess.run(argv, env=env, check=True, stdout=subprocess.PIPE,
                                  stderr=None if args.profile else subprocess.DEVNULL, text=True)
            if args.profile:
                return 0.0, 0
            wall, rss = done.stdout.split()[-2:]
            return float(wall), int(rss)

        for command in args.commands:
            base_wall, base_rss = child(command, one)
            for n in args.objects:
                wall, rss = child(command, write_inputs(folder, n, args.frames, args.size)[1])
                if args.profile:
                    continue
                d_wall, d_rss = wall - base_wall, (rss - base_rss) / 1024
                sys.stdout.write(
                    f"{command:9s} {n:6d} objects: {wall:7.2f} s, +{d_rss:7.1f} MiB peak RSS over "
                    f"1 object ({1000 * d_wall / max(n - 1, 1):6.1f} ms, "
                    f"{1024 * d_rss / max(n - 1, 1):7.1f} KiB per extra object)\n")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
