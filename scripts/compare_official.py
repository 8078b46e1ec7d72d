"""Compare this project's speed with the official segment-anything 1.0 and sam2 1.1.0 packages.

Same random weights (official key layout, fixed seed), same inputs, same threads, one run:

- SAM image encoder (default ViT-B) on a synthetic blob image, fp32 and bf16 (official: its
  ``SamPredictor.set_image`` under ``torch.autocast("cpu", dtype=torch.bfloat16)``; ours: our
  ``SamPredictor`` with ``encoder_dtype="bf16"``, the same autocast around our encoder);
- click -> mask: one positive point on the cached embeddings (official ``SamPredictor.predict``,
  ours ``SamPredictor.predict``), single-mask and three-mask;
- SAM 2 video propagation (default SAM 2.1 hiera tiny, model ``image_size`` = the clip side),
  per tracked frame, encoder included, 1 and 3 objects (one click each on frame 0), and each
  extra object ``(t_N - t_1) / (N - 1)`` from the medians. Official: ``SAM2VideoPredictor``
  (``init_state`` on a folder of JPEG frames, ``add_new_points_or_box`` per object,
  ``propagate_in_video``); ours: ``StackFeatures`` + ``VideoPropagator`` on the same decoded
  JPEGs, in the official options (no sticky corrections, overlapping objects allowed, hole
  filling only where the official code could run it: its CUDA kernel is missing on a CPU
  install, so neither side fills holes there). ``--sam2-bf16`` adds our bf16 rows.

A propagation step is timed from asking the generator for a frame to getting it (the encoder of
that frame, memory attention, decoder, memory encoder, upscaling to the clip size); frame 0
(prompts, first memory encoding) is not timed on either side. Every timed figure is the median
of its runs after untimed warm-up runs (min and all runs are in ``--json``).

Both sides' outputs are compared so the figures are known to be of the same computation: image
embeddings, click masks (IoU), the decoded clip frames (SHA-256) and every frame's masks of
every object (IoU); the exit status is 2 when a mask IoU is at or below ``--min-iou`` or the
frames differ.

Roles of this one file:

1. ``--setup-env DIR`` makes the official environment (Python 3.11 venv, ``torch==2.13.0``,
   numpy, Pillow, hydra-core, iopath, tqdm) and unpacks the official code into
   ``--official-src`` (``pip download --no-deps segment-anything==1.0 sam2==1.1.0``; the sources
   go on ``sys.path``, sam2's CUDA extension is not built)::

       python scripts/compare_official.py --setup-env /tmp/official_env --official-src /tmp/official

2. The comparison, from the project's venv: writes the weights and inputs to a work folder,
   runs the official measurements in ``--official-python`` and ours in this Python, each in its
   own subprocess (role 3), section by section (SAM: official then ours; SAM 2 likewise), and
   writes the table to stdout::

       python scripts/compare_official.py --official-python /tmp/official_env/bin/python \\
           --official-src /tmp/official --json compare.json
       # small, to try it (the SAM encoder input stays 1024x1024): --sam-size 256
       #   --sam-dtypes fp32 --clip-size 256 --frames 3 --repeats 1

   On a CPU without native bf16, bf16 is emulated and its encoder runs dominate: the full run
   took 49 minutes on a shared 2-core EPYC VM (``--sam-dtypes fp32`` leaves them out).

3. ``--role official|ours --section sam|sam2 --work-dir DIR``: one worker. The official worker
   imports only the standard library, torch, numpy, Pillow and the official code (with
   stand-ins, in its own ``sys.modules``, for torchvision, whose compiled ops do not match this
   torch); ours imports the project.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("compare_official")

SCRIPT = Path(__file__).resolve()

#: ``segment_anything.sam_model_registry`` key of each SAM config the official side can build.
OFFICIAL_SAM = {"sam_vit_b": "vit_b", "sam_vit_l": "vit_l", "sam_vit_h": "vit_h"}
SAM_LABELS = {"sam_vit_b": "ViT-B", "sam_vit_l": "ViT-L", "sam_vit_h": "ViT-H"}
#: Official config file (hydra name, inside the sam2 package) of each SAM 2 model.
OFFICIAL_SAM2 = {
    f"{version}_hiera_{size}": f"configs/{version}/{version}_hiera_{short}.yaml"
    for version in ("sam2", "sam2.1")
    for size, short in (("tiny", "t"), ("small", "s"), ("base_plus", "b+"), ("large", "l"))
}
#: Official packages and the pip requirements of the official environment.
OFFICIAL_PACKAGES = ("segment-anything==1.0", "sam2==1.1.0")
OFFICIAL_ENV_REQUIREMENTS = ("numpy", "pillow", "hydra-core", "iopath", "tqdm")
TORCH_REQUIREMENT = "torch==2.13.0"

SAM_WEIGHTS = "sam_weights.pth"
SAM2_WEIGHTS = "sam2_weights.pt"
SAM_IMAGE = "sam_image.npy"
FRAMES_DIR = "frames"
SETTINGS_FILE = "settings.json"
INPUTS_FILE = "inputs.json"
SECTIONS = ("sam", "sam2")
ROLES = ("official", "ours")


@dataclasses.dataclass
class Settings:
    """Everything both workers need; written to the work folder as JSON.

    Attributes
    ----------
    threads : int
        Torch CPU threads of each worker.
    seed : int
        Seed of the weights and the image.
    sam_model, sam2_model : str
        Project config names (``sam_vit_b``, ``sam2.1_hiera_tiny``...).
    sam_size : int
        Side of the square test image (the encoder input is always the model's, 1024).
    sam_dtypes : list of str
        Encoder precisions timed (``fp32``, ``bf16``).
    repeats, warmup : int
        Timed and untimed image encodings per precision; also the propagation passes.
    bf16_repeats : int
        Timed runs in bf16 instead of `repeats` (emulated bf16 is slow on most CPUs).
    click_repeats : int
        Timed clicks per mode.
    clip_size, frames : int
        Side and length of the clip; the SAM 2 model runs at ``image_size = clip_size``.
    objects : list of int
        Object counts propagated (must include 1).
    sam2_bf16 : bool
        Also time our propagation in bf16 (no official counterpart).
    official_src : str
        Folder with the unpacked official code (``sam1/``, ``sam2src/``).
    ours_fill_holes : bool
        Whether our propagation fills small holes (set to what the official code could do).
    """

    threads: int = 1
    seed: int = 0
    sam_model: str = "sam_vit_b"
    sam_size: int = 1024
    sam_dtypes: list[str] = dataclasses.field(default_factory=lambda: ["fp32", "bf16"])
    repeats: int = 2
    warmup: int = 1
    bf16_repeats: int = 1
    click_repeats: int = 20
    sam2_model: str = "sam2.1_hiera_tiny"
    clip_size: int = 512
    frames: int = 8
    objects: list[int] = dataclasses.field(default_factory=lambda: [1, 3])
    sam2_bf16: bool = False
    official_src: str = ""
    ours_fill_holes: bool = False

    def save(self, work: Path) -> None:
        (work / SETTINGS_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, work: Path) -> Settings:
        return cls(**json.loads((work / SETTINGS_FILE).read_text()))


# ------------------------------------------------------------------ figures, arithmetic, table


def timing_stats(times: Sequence[float]) -> dict[str, object]:
    """``min_s``, ``median_s``, ``runs`` and every run (``times_s``) of some timings."""
    if not times:
        raise ValueError("no timings")
    return {"min_s": min(times), "median_s": statistics.median(times), "runs": len(times),
            "times_s": [float(t) for t in times]}


def time_repeated(fn: Callable[[], object], repeats: int, warmup: int) -> dict[str, object]:
    """Call `fn` `warmup` times untimed, then `repeats` times timed; `timing_stats` of those."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return timing_stats(times)


def time_steps(steps: Iterator[object], convert: Callable[[object], tuple[int, np.ndarray]]
               ) -> tuple[list[int], list[float], list[np.ndarray]]:
    """Run a propagation generator to its end, timing each step after the first.

    Parameters
    ----------
    steps : iterator
        Yields one item per frame, the prompted frame first.
    convert : callable
        ``item -> (frame index, (N, H, W) bool masks)``, called outside the timed span.

    Returns
    -------
    frames : list of int
        Frame index of every item.
    times : list of float
        Seconds of every step but the first (the prompted frame).
    masks : list of np.ndarray
        Masks of every item.
    """
    frames: list[int] = []
    times: list[float] = []
    masks: list[np.ndarray] = []
    while True:
        start = time.perf_counter()
        item = next(steps, None)
        elapsed = time.perf_counter() - start
        if item is None:
            break
        if frames:
            times.append(elapsed)
        frame, mask = convert(item)
        frames.append(int(frame))
        masks.append(mask)
    return frames, times, masks


def extra_object_seconds(per_count: Mapping[str, Mapping[str, object]], n: int,
                         key: str = "median_s") -> float | None:
    """``(t_n - t_1) / (n - 1)``: what each object beyond the first adds per frame."""
    one, many = per_count.get("1"), per_count.get(str(n))
    if n <= 1 or one is None or many is None:
        return None
    return (float(many[key]) - float(one[key])) / (n - 1)


def speed_ratio(official: float | None, ours: float | None) -> float | None:
    """``official / ours``: above 1, this project is faster."""
    if official is None or ours is None or ours <= 0:
        return None
    return official / ours


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of one shape (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: seconds on each side (None: not measured there)."""

    work: str
    official_s: float | None
    ours_s: float | None

    @property
    def ratio(self) -> float | None:
        return speed_ratio(self.official_s, self.ours_s)


def _median(entry: Mapping[str, object] | None) -> float | None:
    return None if entry is None else float(entry["median_s"])  # type: ignore[arg-type]


def comparison_rows(settings: Settings, official: Mapping[str, dict], ours: Mapping[str, dict]
                    ) -> list[Row]:
    """The table's rows from the workers' figures (medians).

    Parameters
    ----------
    settings : Settings
    official, ours : mapping
        Section name -> the ``figures`` of that side's worker (sections may be missing).

    Returns
    -------
    list of Row
    """
    rows: list[Row] = []
    o_sam, p_sam = official.get("sam"), ours.get("sam")
    if o_sam is not None or p_sam is not None:
        model = SAM_LABELS.get(settings.sam_model, settings.sam_model)
        for name in settings.sam_dtypes:
            rows.append(Row(f"SAM {model} image encoder 1024x1024, {name}",
                            _median((o_sam or {}).get("encoder", {}).get(name)),
                            _median((p_sam or {}).get("encoder", {}).get(name))))
        for mode, label in (("single", "1 mask"), ("multimask", "3 masks")):
            rows.append(Row(f"click -> mask (1 point, cached embeddings, {label})",
                            _median((o_sam or {}).get("click", {}).get(mode)),
                            _median((p_sam or {}).get("click", {}).get(mode))))
    o_vid, p_vid = official.get("sam2"), ours.get("sam2")
    if o_vid is not None or p_vid is not None:
        size = settings.clip_size
        o_prop = (o_vid or {}).get("propagation", {})
        p_prop = (p_vid or {}).get("propagation", {})
        for dtype in ("fp32", "bf16"):
            o_counts, p_counts = o_prop.get(dtype, {}), p_prop.get(dtype, {})
            if not o_counts and not p_counts:
                continue
            for n in settings.objects:
                rows.append(Row(f"{settings.sam2_model} {size}x{size} per frame, {n} object"
                                f"{'s' if n > 1 else ''}, {dtype}",
                                _median(o_counts.get(str(n))), _median(p_counts.get(str(n)))))
            for n in settings.objects:
                if n > 1:
                    rows.append(Row(f"  each extra object (t{n} - t1)/{n - 1}, {dtype}",
                                    extra_object_seconds(o_counts, n),
                                    extra_object_seconds(p_counts, n)))
    return rows


def _cell(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if abs(seconds) >= 1.0:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"


def format_table(rows: Sequence[Row], header: Sequence[str] = (), notes: Sequence[str] = ()) -> str:
    """The table as text: work | official | this project | ratio (official / ours).

    Parameters
    ----------
    rows : sequence of Row
    header, notes : sequence of str
        Lines above and below the table.

    Returns
    -------
    str
        Ends with a newline.
    """
    titles = ("work", "official", "this project", "ratio")
    cells = [(r.work, _cell(r.official_s), _cell(r.ours_s),
              "-" if r.ratio is None else f"{r.ratio:.2f}x") for r in rows]
    widths = [max(len(titles[i]), *(len(c[i]) for c in cells)) for i in range(4)]

    def line(values: Sequence[str]) -> str:
        first = values[0].ljust(widths[0])
        return " | ".join([first, *(v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True))])

    out = [*header, line(titles), "-|-".join("-" * w for w in widths), *(line(c) for c in cells),
           "ratio = official / this project (above 1: this project is faster)", *notes]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ inputs and weights


def blob_image(size: int, seed: int) -> tuple[np.ndarray, tuple[float, float]]:
    """A synthetic ``(size, size, 3)`` uint8 image with soft coloured blobs, and a click ``(x, y)``
    at the centre of the first blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    image = np.stack([40 + 50 * xx, 50 + 40 * yy, 60 + 30 * (xx + yy) / 2], axis=-1)
    click = (0.0, 0.0)
    for k in range(7):
        cx, cy = rng.uniform(0.2, 0.8, 2)
        rx, ry = rng.uniform(0.06, 0.16, 2)
        colour = rng.uniform(90, 250, 3)
        inside = np.clip(1.5 - ((xx - cx) / rx) ** 2 - ((yy - cy) / ry) ** 2, 0, 1)[..., None]
        image = image * (1 - inside) + colour * inside
        if k == 0:
            click = (float(cx * size), float(cy * size))
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), click


def frames_sha256(frames: Iterable[np.ndarray]) -> str:
    """SHA-256 over the bytes of decoded frames (to show both sides read the same pixels)."""
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def read_frames(folder: Path) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 RGB: the JPEG frames of `folder` (``<index>.jpg``) decoded with PIL."""
    from PIL import Image

    paths = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem))
    return np.stack([np.array(Image.open(p).convert("RGB")) for p in paths])


def prepare_inputs(work: Path, settings: Settings) -> dict:
    """Write the weights, the image and the clip into `work` (project venv only).

    Returns
    -------
    dict
        ``sam_click_xy`` and ``clip_clicks_xy`` (one ``(x, y)`` per object), also saved as
        ``inputs.json``.
    """
    from PIL import Image

    from napari_focsam.benchmarks.sam2 import DiscStack
    from napari_focsam.models.sam import SAM_CONFIGS, build_sam
    from napari_focsam.models.sam2.config import SAM2_CONFIGS
    from napari_focsam.models.sam2.model import build_sam2

    work.mkdir(parents=True, exist_ok=True)
    settings.save(work)
    inputs: dict = {}
    # SAM: bare state_dict in the official layout (as sam_vit_b_01ec64.pth)
    torch.manual_seed(settings.seed)
    torch.save(build_sam(SAM_CONFIGS[settings.sam_model]).state_dict(), work / SAM_WEIGHTS)
    image, click = blob_image(settings.sam_size, settings.seed)
    np.save(work / SAM_IMAGE, image)
    inputs["sam_click_xy"] = list(click)
    # SAM 2: {"model": state_dict}, with every object present and mask logits of a unit or two
    # (masks of about a fifth of the frame: the masks compared are neither empty nor full)
    torch.manual_seed(settings.seed)
    net = build_sam2(SAM2_CONFIGS[settings.sam2_model])
    dec = net.sam_mask_decoder
    with torch.no_grad():
        dec.pred_obj_score_head.layers[-1].bias += 10.0
        for mlp in dec.output_hypernetworks_mlps:
            mlp.layers[-1].weight *= 30.0
            mlp.layers[-1].bias *= 30.0
    torch.save({"model": net.state_dict()}, work / SAM2_WEIGHTS)
    # the clip: the sam2 benchmark's moving discs, one per object, as JPEGs (the official video
    # predictor reads a folder of them; ours decodes the same files)
    stack = DiscStack(settings.frames, (settings.clip_size, settings.clip_size), max(settings.objects))
    folder = work / FRAMES_DIR
    folder.mkdir(exist_ok=True)
    for t in range(len(stack)):
        Image.fromarray(stack[t]).save(folder / f"{t:05d}.jpg", quality=95)
    inputs["clip_clicks_xy"] = [list(stack.centre(0, k)) for k in range(max(settings.objects))]
    (work / INPUTS_FILE).write_text(json.dumps(inputs, indent=1))
    return inputs


def _inputs(work: Path) -> dict:
    return json.loads((work / INPUTS_FILE).read_text())


# ------------------------------------------------------------------ official worker


def _module(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _not_used(name: str) -> Callable[..., object]:
    def refuse(*args: object, **kwargs: object) -> object:
        raise NotImplementedError(f"torchvision stand-in: {name} is not used by this comparison")
    return refuse


class _UnusedTransform:
    """Constructible stand-in for a torchvision transform that must never be applied."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> object:
        raise NotImplementedError(f"torchvision stand-in: {type(self).__name__} is not used here")


def install_torchvision_stand_ins() -> bool:
    """Stand-ins for torchvision in this process's ``sys.modules`` when it is not installed.

    ``segment_anything``'s ``ResizeLongestSide.apply_image`` calls
    ``resize(to_pil_image(image), size)``: torchvision's PIL path, written out here (PIL
    bilinear resize). Everything else only has to import (box ops of the mask generators,
    ``SAM2Transforms``' transforms) and raises if called.

    Returns
    -------
    bool
        Whether stand-ins were installed.
    """
    if importlib.util.find_spec("torchvision") is not None:
        return False
    from PIL import Image

    def to_pil_image(pic: np.ndarray, mode: str | None = None) -> Image.Image:
        return Image.fromarray(np.asarray(pic), mode=mode)

    def resize(img: Image.Image, size: Sequence[int], *args: object, **kwargs: object) -> Image.Image:
        h, w = int(size[0]), int(size[1])
        return img.resize((w, h), Image.BILINEAR)

    transforms = {name: type(name, (_UnusedTransform,), {}) for name in ("Normalize", "Resize", "ToTensor")}
    _module("torchvision")
    _module("torchvision.ops", nms=_not_used("nms"), batched_nms=_not_used("batched_nms"))
    _module("torchvision.ops.boxes", batched_nms=_not_used("batched_nms"),
            box_area=_not_used("box_area"), nms=_not_used("nms"))
    _module("torchvision.transforms", **transforms)
    _module("torchvision.transforms.functional", resize=resize, to_pil_image=to_pil_image)
    return True


def _official_paths(src: Path) -> list[str]:
    """Folders to put on ``sys.path`` for ``segment_anything`` and ``sam2``."""
    sam1 = src / "sam1"
    sam2 = next((p.parent.parent for p in sorted((src / "sam2src").glob("*/sam2/__init__.py"))), None)
    if not (sam1 / "segment_anything" / "__init__.py").is_file() or sam2 is None:
        raise FileNotFoundError(f"no official code under {src} (run --setup-env first)")
    return [str(sam1), str(sam2)]


def official_sam(work: Path, settings: Settings) -> tuple[dict, dict]:
    """Official SAM: encoder per precision (``set_image``), then clicks on fp32 embeddings."""
    from segment_anything import SamPredictor, sam_model_registry

    sam = sam_model_registry[OFFICIAL_SAM[settings.sam_model]](checkpoint=str(work / SAM_WEIGHTS))
    sam.eval()
    predictor = SamPredictor(sam)
    image = np.load(work / SAM_IMAGE)
    figures: dict = {"encoder": {}, "click": {}}
    arrays: dict[str, torch.Tensor] = {}
    for name in _fp32_last(settings.sam_dtypes):
        def encode(name: str = name) -> None:
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if name == "bf16" else contextlib.nullcontext()
            with ctx:
                predictor.set_image(image)

        figures["encoder"][name] = time_repeated(encode, _repeats(settings, name), settings.warmup)
        arrays[f"features_{name}"] = predictor.features.float().clone()
        logger.info("official encoder %s: median %.3f s", name, figures["encoder"][name]["median_s"])
    if "fp32" not in settings.sam_dtypes:
        predictor.set_image(image)
    x, y = _inputs(work)["sam_click_xy"]
    point, label = np.array([[x, y]], np.float32), np.array([1])
    for mode in ("single", "multimask"):
        def click(mode: str = mode) -> tuple:
            return predictor.predict(point_coords=point, point_labels=label,
                                     multimask_output=mode == "multimask")

        figures["click"][mode] = time_repeated(click, settings.click_repeats, 2)
        masks, scores, _ = click()
        arrays[f"click_{mode}_masks"] = torch.from_numpy(np.asarray(masks, bool))
        arrays[f"click_{mode}_scores"] = torch.from_numpy(np.asarray(scores, np.float32))
    return figures, arrays


def official_sam2(work: Path, settings: Settings) -> tuple[dict, dict]:
    """Official ``SAM2VideoPredictor``: propagation per frame for each object count."""
    from PIL import Image
    from sam2.build_sam import build_sam2_video_predictor

    fill_holes = importlib.util.find_spec("sam2._C") is not None
    if not fill_holes:
        logger.info("official hole filling is skipped: sam2._C (CUDA extension) is not built")
        warnings.filterwarnings("ignore", message=r"(?s).*Skipping the post-processing step")
    predictor = build_sam2_video_predictor(
        OFFICIAL_SAM2[settings.sam2_model], str(work / SAM2_WEIGHTS), device="cpu",
        hydra_overrides_extra=[f"++model.image_size={settings.clip_size}"])
    folder = work / FRAMES_DIR
    # what the official loader decodes (PIL, RGB, resized to image_size: the same size here)
    decoded = [np.array(Image.open(p).convert("RGB").resize((settings.clip_size,) * 2))
               for p in sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem))]
    clicks = _inputs(work)["clip_clicks_xy"]
    figures: dict = {"propagation": {"fp32": {}}, "fill_holes": fill_holes,
                     "frames_sha256": frames_sha256(decoded)}
    arrays: dict[str, torch.Tensor] = {}

    def convert(item: object) -> tuple[int, np.ndarray]:
        frame, _, logits = item  # type: ignore[misc]
        return int(frame), (logits[:, 0] > 0.0).cpu().numpy()

    for n in settings.objects:
        def one_pass(n: int = n) -> tuple[list[int], list[float], list[np.ndarray]]:
            state = predictor.init_state(video_path=str(folder))
            for k in range(n):
                predictor.add_new_points_or_box(state, frame_idx=0, obj_id=k + 1,
                                                points=np.array([clicks[k]], np.float32),
                                                labels=np.array([1], np.int32))
            return time_steps(predictor.propagate_in_video(state), convert)

        figures["propagation"]["fp32"][str(n)], arrays[f"masks_fp32_{n}"] = _passes(
            one_pass, settings, settings.repeats)
        logger.info("official propagation, %d objects: median %.3f s per frame", n,
                    figures["propagation"]["fp32"][str(n)]["median_s"])
    return figures, arrays


def _passes(one_pass: Callable[[], tuple[list[int], list[float], list[np.ndarray]]],
            settings: Settings, repeats: int) -> tuple[dict, torch.Tensor]:
    """`settings.warmup` and `repeats` timed propagation passes: the per-frame `timing_stats`
    (with the frame order) and the last pass's masks ``(T, N, H, W)`` bool."""
    for _ in range(settings.warmup):
        one_pass()
    times: list[float] = []
    for _ in range(max(1, repeats)):
        frames, step_times, masks = one_pass()
        times += step_times
    if frames != list(range(settings.frames)):
        raise RuntimeError(f"frames came in the order {frames}")
    return {**timing_stats(times), "frames": frames}, torch.from_numpy(np.stack(masks))


def _repeats(settings: Settings, dtype: str) -> int:
    return settings.bf16_repeats if dtype == "bf16" else settings.repeats


def _fp32_last(dtypes: Sequence[str]) -> list[str]:
    """The precisions in order, fp32 last (the clicks then run on fp32 embeddings)."""
    return sorted(dtypes, key=lambda name: name == "fp32")


# ------------------------------------------------------------------ our worker


def ours_sam(work: Path, settings: Settings) -> tuple[dict, dict]:
    """Our SAM: encoder per precision (``SamPredictor.set_image``), then clicks (fp32 embeddings)."""
    from napari_focsam.engine.sam_predictor import SamPredictor
    from napari_focsam.models.sam import SAM_CONFIGS
    from napari_focsam.models.sam.loading import load_sam

    net = load_sam(work / SAM_WEIGHTS, SAM_CONFIGS[settings.sam_model])
    image = np.load(work / SAM_IMAGE)
    figures: dict = {"encoder": {}, "click": {}}
    arrays: dict[str, torch.Tensor] = {}
    predictor = None
    for name in _fp32_last(settings.sam_dtypes):
        predictor = SamPredictor(net, device="cpu", encoder_dtype=name)
        figures["encoder"][name] = time_repeated(lambda p=predictor: p.set_image(image),
                                                 _repeats(settings, name), settings.warmup)
        arrays[f"features_{name}"] = predictor.features.float().clone()
        logger.info("our encoder %s: median %.3f s", name, figures["encoder"][name]["median_s"])
    if predictor is None or "fp32" not in settings.sam_dtypes:
        predictor = SamPredictor(net, device="cpu", encoder_dtype="fp32")
        predictor.set_image(image)
    x, y = _inputs(work)["sam_click_xy"]
    point, label = np.array([[y, x]]), np.array([1])  # ours: (row, col)
    for mode in ("single", "multimask"):
        def click(mode: str = mode, p: SamPredictor = predictor) -> object:
            return p.predict(point, label, multimask=mode == "multimask")

        figures["click"][mode] = time_repeated(click, settings.click_repeats, 2)
        result = click()
        arrays[f"click_{mode}_masks"] = torch.from_numpy(np.asarray(result.masks, bool))
        arrays[f"click_{mode}_scores"] = torch.from_numpy(np.asarray(result.scores, np.float32))
    return figures, arrays


def ours_sam2(work: Path, settings: Settings) -> tuple[dict, dict]:
    """Our propagation engine on the same decoded frames, in the official options."""
    from napari_focsam.engine.frame_features import StackFeatures
    from napari_focsam.engine.precision import autocast_context, resolve_encoder_dtype
    from napari_focsam.engine.propagation import VideoPropagator
    from napari_focsam.engine.propagation_state import PropagationOptions
    from napari_focsam.models.sam2.config import SAM2_CONFIGS
    from napari_focsam.models.sam2.loading import load_sam2

    config = SAM2_CONFIGS[settings.sam2_model].replace(image_size=settings.clip_size)
    net = load_sam2(work / SAM2_WEIGHTS, config).eval()
    frames = read_frames(work / FRAMES_DIR)
    hw = (int(frames.shape[1]), int(frames.shape[2]))
    options = PropagationOptions(sticky_corrections=False, non_overlap=False,
                                 fill_hole_area=None if settings.ours_fill_holes else 0)
    clicks = _inputs(work)["clip_clicks_xy"]
    dtypes = ["fp32", "bf16"] if settings.sam2_bf16 else ["fp32"]
    figures: dict = {"propagation": {name: {} for name in dtypes},
                     "fill_holes": settings.ours_fill_holes, "frames_sha256": frames_sha256(frames)}
    arrays: dict[str, torch.Tensor] = {}
    device = torch.device("cpu")

    def convert(result: object) -> tuple[int, np.ndarray]:
        return result.frame, result.masks()  # type: ignore[attr-defined]

    for name in dtypes:
        dtype = resolve_encoder_dtype(device, name)
        for n in settings.objects:
            def one_pass(n: int = n, dtype: torch.dtype = dtype) -> tuple:
                with torch.no_grad(), autocast_context(device, dtype):
                    feats = StackFeatures(net, frames, encoder_dtype=dtype)
                    prop = VideoPropagator(net, feats, hw, options)
                    for k in range(n):
                        prop.add_points(0, k + 1, [clicks[k]], [1])
                    return time_steps(prop.propagate(), convert)

            figures["propagation"][name][str(n)], arrays[f"masks_{name}_{n}"] = _passes(
                one_pass, settings, _repeats(settings, name))
            logger.info("our propagation %s, %d objects: median %.3f s per frame", name, n,
                        figures["propagation"][name][str(n)]["median_s"])
    return figures, arrays


WORKERS: dict[tuple[str, str], Callable[[Path, Settings], tuple[dict, dict]]] = {
    ("official", "sam"): official_sam,
    ("official", "sam2"): official_sam2,
    ("ours", "sam"): ours_sam,
    ("ours", "sam2"): ours_sam2,
}


def result_path(work: Path, role: str, section: str) -> Path:
    return work / f"{role}_{section}.pt"


def run_worker(role: str, section: str, work: Path) -> None:
    """The worker role: measure one section on one side and save ``{role}_{section}.pt``."""
    settings = Settings.load(work)
    torch.set_num_threads(settings.threads)
    if role == "official":
        stand_ins = install_torchvision_stand_ins()
        sys.path[:0] = _official_paths(Path(settings.official_src))
    else:
        stand_ins = False
    figures, arrays = WORKERS[(role, section)](work, settings)
    figures["torch"] = str(torch.__version__)
    figures["threads"] = torch.get_num_threads()
    figures["torchvision_stand_ins"] = stand_ins
    if role == "official" and any(name.startswith("napari_focsam") for name in sys.modules):
        raise RuntimeError("the official worker imported the project")
    torch.save({"figures": figures, "arrays": arrays}, result_path(work, role, section))


# ------------------------------------------------------------------ orchestration


def _spawn(python: str, role: str, section: str, work: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TQDM_DISABLE": "1"}
    if role == "official":
        env.pop("PYTHONPATH", None)
    cmd = [python, str(SCRIPT), "--role", role, "--section", section, "--work-dir", str(work)]
    logger.info("%s %s: %s", role, section, " ".join(cmd))
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=str(work))
    logger.info("%s %s done in %.0f s", role, section, time.perf_counter() - start)
    return torch.load(result_path(work, role, section), weights_only=True)


def agreement(section: str, official: dict, ours: dict, settings: Settings) -> dict:
    """How closely the two sides' outputs agree (see the module docstring)."""
    o, p = official["arrays"], ours["arrays"]
    out: dict = {}
    if section == "sam":
        out["embeddings"] = {name: {"max_abs_diff": float((o[f"features_{name}"] - p[f"features_{name}"])
                                                          .abs().max()),
                                    "max_abs": float(o[f"features_{name}"].abs().max())}
                             for name in settings.sam_dtypes}
        for mode in ("single", "multimask"):
            ma, mb = o[f"click_{mode}_masks"].numpy(), p[f"click_{mode}_masks"].numpy()
            out[f"click_{mode}_iou"] = [mask_iou(x, y) for x, y in zip(ma, mb, strict=True)]
            out[f"click_{mode}_area"] = [float(x.mean()) for x in ma]
            out[f"click_{mode}_scores_max_abs_diff"] = float(
                (o[f"click_{mode}_scores"] - p[f"click_{mode}_scores"]).abs().max())
    else:
        out["frames_identical"] = official["figures"]["frames_sha256"] == ours["figures"]["frames_sha256"]
        for n in settings.objects:
            ma, mb = o[f"masks_fp32_{n}"].numpy(), p[f"masks_fp32_{n}"].numpy()  # (T, N, H, W)
            ious = np.array([[mask_iou(x, y) for x, y in zip(fa, fb, strict=True)]
                             for fa, fb in zip(ma, mb, strict=True)])
            out[f"objects_{n}"] = {"final_frame_iou": ious[-1].tolist(), "min_iou": float(ious.min()),
                                   "mean_iou": float(ious.mean()),
                                   "final_frame_area": [float(m.mean()) for m in ma[-1]]}
    return out


def agreement_notes(agree: Mapping[str, dict], min_iou: float) -> tuple[list[str], bool]:
    """Lines for the table's foot, and whether every mask check passed."""
    notes: list[str] = []
    ok = True
    sam = agree.get("sam")
    if sam is not None:
        emb = "; ".join(f"{name} max |diff| {e['max_abs_diff']:.2e} (max |x| {e['max_abs']:.2f})"
                        for name, e in sam["embeddings"].items())
        notes.append(f"SAM embeddings, official vs ours: {emb}")
        for mode in ("single", "multimask"):
            ious = sam[f"click_{mode}_iou"]
            ok &= min(ious) > min_iou
            notes.append(f"SAM click ({mode}): mask IoU {', '.join(f'{v:.4f}' for v in ious)} "
                         f"(mask area {', '.join(f'{a:.1%}' for a in sam[f'click_{mode}_area'])}), "
                         f"scores max |diff| {sam[f'click_{mode}_scores_max_abs_diff']:.1e}")
    vid = agree.get("sam2")
    if vid is not None:
        notes.append(f"SAM 2 decoded frames identical on both sides: {vid['frames_identical']}")
        ok &= bool(vid["frames_identical"])
        for key, entry in vid.items():
            if not key.startswith("objects_"):
                continue
            ok &= entry["min_iou"] > min_iou
            notes.append(f"SAM 2, {key.split('_')[1]} object(s): final-frame mask IoU "
                         f"{', '.join(f'{v:.4f}' for v in entry['final_frame_iou'])} (area "
                         f"{', '.join(f'{a:.1%}' for a in entry['final_frame_area'])}); all frames: "
                         f"min {entry['min_iou']:.4f}, mean {entry['mean_iou']:.4f}")
    notes.append(f"masks agree (every IoU > {min_iou}): {'yes' if ok else 'NO'}")
    return notes, ok


def _runs_line(settings: Settings, sections: Sequence[str]) -> str:
    """What each median is of (a line of the table's head)."""
    runs = f"{settings.repeats} (bf16: {settings.bf16_repeats})"
    parts = []
    if "sam" in sections:
        parts.append(f"SAM image {settings.sam_size}x{settings.sam_size}: encoder runs {runs}, "
                     f"clicks {settings.click_repeats}")
    if "sam2" in sections:
        parts.append(f"clip {settings.frames} frames {settings.clip_size}x{settings.clip_size}: "
                     f"{settings.frames - 1} tracked frames x passes {runs}")
    return f"medians after {settings.warmup} warm-up; " + "; ".join(parts)


def compare(args: argparse.Namespace) -> int:
    """The comparison run (see the module docstring); returns the exit status."""
    from napari_focsam.benchmarks.timing import machine_info

    settings = Settings(threads=args.threads, seed=args.seed, sam_model=args.sam_model,
                        sam_size=args.sam_size, sam_dtypes=list(args.sam_dtypes), repeats=args.repeats,
                        warmup=args.warmup, bf16_repeats=args.bf16_repeats, click_repeats=args.click_repeats,
                        sam2_model=args.sam2_model, clip_size=args.clip_size, frames=args.frames,
                        objects=sorted(set(args.objects)), sam2_bf16=args.sam2_bf16,
                        official_src=str(Path(args.official_src).resolve()))
    if not args.skip_sam and settings.sam_model not in OFFICIAL_SAM:
        raise SystemExit(f"--sam-model must be one of {sorted(OFFICIAL_SAM)} (the official builds)")
    if not args.skip_sam2 and settings.sam2_model not in OFFICIAL_SAM2:
        raise SystemExit(f"--sam2-model must be one of {sorted(OFFICIAL_SAM2)}")
    if 1 not in settings.objects or settings.frames < 2:
        raise SystemExit("--objects must include 1 and --frames be at least 2")
    _official_paths(Path(settings.official_src))  # fail early
    sections = [s for s in SECTIONS if not getattr(args, f"skip_{s}")]
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        if args.work_dir:
            work = Path(args.work_dir).resolve()
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="compare_official_")))
        logger.info("writing weights and inputs to %s", work)
        prepare_inputs(work, settings)
        results: dict[str, dict[str, dict]] = {role: {} for role in ROLES}
        agree: dict[str, dict] = {}
        for section in sections:
            results["official"][section] = _spawn(args.official_python, "official", section, work,
                                                  settings.threads)
            if section == "sam2":  # ours fills holes exactly when the official code could
                settings.ours_fill_holes = bool(results["official"][section]["figures"]["fill_holes"])
                settings.save(work)
            results["ours"][section] = _spawn(sys.executable, "ours", section, work, settings.threads)
            agree[section] = agreement(section, results["official"][section], results["ours"][section],
                                       settings)
    load_after = os.getloadavg()
    figures = {role: {s: r["figures"] for s, r in per.items()} for role, per in results.items()}
    rows = comparison_rows(settings, figures["official"], figures["ours"])
    machine = machine_info()
    official_torch = next((f["torch"] for f in figures["official"].values()), "?")
    header = [
        f"CPU: {machine['cpu']} ({machine['cores']} cores), {settings.threads} torch thread(s) "
        f"per side; torch {machine['torch']} (ours), {official_torch} (official); "
        f"native bf16: {machine['cpu_native_bf16']}",
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)",
        _runs_line(settings, sections),
        "",
    ]
    notes, ok = agreement_notes(agree, args.min_iou)
    fill = "on" if settings.ours_fill_holes else "off (the official CUDA kernel is missing)"
    notes = ["", *notes, f"hole filling: {fill}; our propagation options: official defaults"]
    sys.stdout.write(format_table(rows, header, notes))
    if args.json:
        report = {"settings": dataclasses.asdict(settings), "machine": machine,
                  "load_average": {"before": load_before, "after": load_after},
                  "figures": figures, "agreement": agree, "masks_agree": ok,
                  "rows": [{**dataclasses.asdict(r), "ratio": r.ratio} for r in rows]}
        Path(args.json).write_text(json.dumps(report, indent=1))
        logger.info("wrote %s", args.json)
    return 0 if ok else 2


# ------------------------------------------------------------------ the official environment


def setup_commands(env_dir: Path, official_src: Path, python: str) -> list[list[str]]:
    """The commands that make the official environment (unpacking is done in Python)."""
    pip = str(env_dir / "bin" / "pip")
    return [
        [python, "-m", "venv", str(env_dir)],
        [pip, "install", TORCH_REQUIREMENT],  # first: the local CPU wheel
        [pip, "install", *OFFICIAL_ENV_REQUIREMENTS],
        [pip, "download", "--no-deps", *OFFICIAL_PACKAGES, "-d", str(official_src / "dl")],
    ]


def unpack_official(official_src: Path) -> list[str]:
    """Unpack the downloaded wheel and sdist into ``sam1/`` and ``sam2src/``; the sys.path folders."""
    dl = official_src / "dl"
    wheel = next(dl.glob("segment_anything-*.whl"))
    sdist = next(dl.glob("sam2-*.tar.gz"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(official_src / "sam1")
    with tarfile.open(sdist) as archive:
        archive.extractall(official_src / "sam2src", filter="data")
    return _official_paths(official_src)


def setup_env(env_dir: Path, official_src: Path, python: str, dry_run: bool) -> None:
    """Make (or, with `dry_run`, write out) the official environment."""
    commands = setup_commands(env_dir, official_src, python)
    if dry_run:
        lines = [" ".join(c) for c in commands]
        lines.append(f"# then unpack {official_src}/dl/*.whl into {official_src}/sam1 and the sdist "
                     f"into {official_src}/sam2src")
        sys.stdout.write("\n".join(lines) + "\n")
        return
    official_src.mkdir(parents=True, exist_ok=True)
    for command in commands:
        logger.info("$ %s", " ".join(command))
        subprocess.run(command, check=True)
    paths = unpack_official(official_src)
    logger.info("official code on sys.path of the official worker: %s", ", ".join(paths))
    logger.info("now run: python %s --official-python %s --official-src %s", SCRIPT,
                env_dir / "bin" / "python", official_src)


# ------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup-env", type=Path, metavar="DIR", help="make the official venv in DIR")
    parser.add_argument("--dry-run", action="store_true", help="with --setup-env: only print commands")
    parser.add_argument("--setup-python", default="python3.11", help="Python that makes the venv")
    parser.add_argument("--official-python", help="Python of the official environment")
    parser.add_argument("--official-src", default="/tmp/official",
                        help="folder of the unpacked official code (default /tmp/official)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per side (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sam-model", default="sam_vit_b", help="default sam_vit_b")
    parser.add_argument("--sam-size", type=int, default=1024, help="test image side (default 1024)")
    parser.add_argument("--sam-dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed encoder runs and propagation passes (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before (default 1)")
    parser.add_argument("--bf16-repeats", type=int, default=1,
                        help="timed bf16 encoder runs and propagation passes (default 1)")
    parser.add_argument("--click-repeats", type=int, default=20)
    parser.add_argument("--sam2-model", default="sam2.1_hiera_tiny")
    parser.add_argument("--clip-size", type=int, default=512,
                        help="clip side = SAM 2 image_size (default 512)")
    parser.add_argument("--frames", type=int, default=8, help="clip length (default 8)")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--sam2-bf16", action="store_true", help="also time our propagation in bf16")
    parser.add_argument("--skip-sam", action="store_true")
    parser.add_argument("--skip-sam2", action="store_true")
    parser.add_argument("--min-iou", type=float, default=0.99, help="mask agreement threshold")
    parser.add_argument("--json", help="save the figures to this JSON file")
    parser.add_argument("--work-dir", help="keep weights, inputs and results here (default: temporary)")
    parser.add_argument("--role", choices=ROLES, help=argparse.SUPPRESS)
    parser.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.role:
        if not (args.section and args.work_dir):
            raise SystemExit("--role needs --section and --work-dir")
        run_worker(args.role, args.section, Path(args.work_dir))
        return 0
    if args.setup_env:
        setup_env(args.setup_env, Path(args.official_src), args.setup_python, args.dry_run)
        return 0
    if not args.official_python:
        raise SystemExit("give --official-python (see --setup-env) or --setup-env DIR")
    if args.skip_sam and args.skip_sam2:
        raise SystemExit("nothing to compare: both --skip-sam and --skip-sam2")
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
