"""Kernels chosen by measurement: ops with several implementations, exact up to rounding.

Machines differ (a CPU with or without AMX or native bf16, a laptop, a GPU), and so does the
fastest way to compute the same op. An op registered here (`KernelOp`) has *candidates*,
functions that return the same result up to rounding, and a *default rule* (the built-in
choice). The first time a call's *key* is seen, the candidates are timed on the call's own
inputs and the choice is remembered, like cuDNN's benchmark mode.

Ops (registered by `napari_focsam.models.common`)
    ``attention`` (Hiera, SAM 2 memory attention), ``attention_bias`` (TinyViT's learned
    bias), ``attention_rel_pos`` (SAM ViT's decomposed relative positions) and
    ``attention_zero_key`` (FocSAM's refiner windows); see their functions there for the
    candidates and default rules.

Key
    ``op | device type | dtype | shape signature | threads | flags``: the shape signature is
    the op's (`KernelOp.key`), for attention ``B*h, Nq, Nk`` rounded up to powers of two and
    ``D, Dv`` exact, so a few keys cover a model; threads are ``torch.get_num_threads()`` on
    the CPU; flags say e.g. whether a key padding mask is given.

When measuring happens
    Only on inference-sized work: the op's FLOP estimate must reach `MEASURE_MIN_FLOPS`
    (0.1 GFLOP; tiny test models at small inputs stay below it and take the default rule),
    gradients must not be recorded (no input requiring grad while grad mode is on), and not
    while tracing or compiling (``torch.jit`` / ``torch.compile``: the default rule is used).
    A measurement runs each candidate once (warm-up) and then `REPEATS` times under no_grad,
    keeps the minimum, and returns the chosen candidate's output of the actual call; a
    candidate whose warm-up takes over `SLOW_S` and 20x the best so far is not run again, and
    one whose first timed run takes over `SLOW_S` is not repeated.

On the CPU: a representative part, after a screen
    Calls above `PROBE_FLOPS` are timed on a part of the call (`KernelOp.probe`) that keeps
    what decides the kernels' order, the working set of their buffers: for attention every
    batch entry, head and key and at least one full block of query rows, only fewer query
    rows. (Timed on a part that fits in the caches, a GEMM-based kernel can win by a few
    percent and then take 1.3x as long as SDPA on the whole call, its score buffer spilling.)
    That part can be far larger than `PROBE_FLOPS`, so when the op has a `KernelOp.screen`,
    each candidate first runs on a small part of about `PROBE_FLOPS` and one more than
    `SCREEN_SLOWDOWN` times slower than the fastest there is dropped (e.g. emulated bf16 GEMMs
    on a CPU without native bf16, 20-30x slower): a hopeless candidate costs a fraction of a
    second, not seconds.

The choice: the default unless clearly beaten
    The fastest candidate replaces the default rule's candidate only when it takes at most
    ``1 - MIN_GAIN`` of the default's time (at least 10 % less); on a near tie the default
    is kept, since a few percent on a part of the call are within the noise and the
    difference between a part and the whole call. When the default candidate failed or was
    screened out, the fastest is chosen. The cache entry records both (``choice``,
    ``fastest``), and the log line says when the default was kept on a near tie.

Cache
    In memory, and in a JSON file keyed by a machine fingerprint (CPU model, core count, torch
    version, GPU name): ``$NAPARI_FOCSAM_KERNEL_CACHE`` if set, else
    ``<user cache dir>/napari-focsam/kernels.json``. Writes are atomic (temporary file +
    ``os.replace``); an unreadable or corrupt file is ignored with one warning and rewritten,
    as is one of another `CACHE_VERSION` (its choices may follow older rules); a location that
    cannot be written keeps the choices in memory.

Overrides (strongest first)
    - Python: ``force("attention", "sdpa")`` (context manager) or ``set_forced(...)``;
      ``set_selection(False)`` turns measuring off (default rules).
    - Environment: ``NAPARI_FOCSAM_KERNELS="attention=blocked"`` (comma-separated
      ``op=candidate``; ``op=default`` / ``op=auto`` per op), or ``off`` / ``default`` for the
      default rules everywhere, ``auto`` for measuring (the default).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from .cpu import cpu_model

__all__ = [
    "ENV_KERNELS",
    "ENV_KERNEL_CACHE",
    "MEASURE_MIN_FLOPS",
    "MIN_GAIN",
    "REGISTRY",
    "KernelChoiceError",
    "KernelKey",
    "KernelOp",
    "KernelRegistry",
    "choices",
    "default_cache_path",
    "force",
    "machine_fingerprint",
    "paused",
    "register",
    "run",
    "set_forced",
    "set_selection",
]

logger = logging.getLogger(__name__)

#: Forced choices / on-off switch, e.g. ``"attention=blocked"`` or ``"off"``.
ENV_KERNELS = "NAPARI_FOCSAM_KERNELS"
#: Path of the JSON file the measured choices are kept in.
ENV_KERNEL_CACHE = "NAPARI_FOCSAM_KERNEL_CACHE"
#: Work below this many FLOPs (the op's estimate) takes the default rule, unmeasured.
MEASURE_MIN_FLOPS = 1e8
#: On the CPU, calls above this many FLOPs are timed on a part (`KernelOp.probe`: about this
#: many FLOPs or more) after a screen on a part of about this many (`KernelOp.screen`), then
#: the chosen candidate computes the call.
PROBE_FLOPS = 5e8
#: A candidate replaces the default rule's only when it takes at most ``1 - MIN_GAIN`` of the
#: default candidate's time: near ties keep the default.
MIN_GAIN = 0.10
#: A candidate this many times slower than the fastest on the screen is not timed further.
#: Kernels' order changes between a small part and the whole call by up to ~5x (SAM's ViT
#: rel-pos, 2 threads of an AMD EPYC: the one-hot kernel 4.5x slower than SDPA on 64 query
#: rows, 1.2x on 512), emulated bf16 GEMMs are 20-30x slower.
SCREEN_SLOWDOWN = 8.0
#: Timed runs per candidate after the warm-up run.
REPEATS = 2
#: A candidate whose first timed run takes longer than this is not run again (nor one whose
#: warm-up takes longer than this and 20x the best candidate so far).
SLOW_S = 1.0
#: Layout of the cache file; a file of another version is ignored (and rewritten).
CACHE_VERSION = 2
#: Words of `ENV_KERNELS` and `force`: measure / take the built-in rule.
AUTO, DEFAULT = "auto", "default"
_OFF_WORDS = frozenset({"off", DEFAULT, "0", "false", "no"})
_ON_WORDS = frozenset({AUTO, "on", "1", "true", "yes"})


class KernelChoiceError(UserError, ValueError):
    """An unknown op or candidate in a forced kernel choice (``NAPARI_FOCSAM_KERNELS``,
    `force`)."""


@dataclass(frozen=True)
class KernelKey:
    """What a call is classified by (`KernelOp.key`'s answer).

    Attributes
    ----------
    device : torch.device
        Device of the inputs.
    dtype : torch.dtype
        Their dtype.
    shape : str
        Bucketed shape signature, e.g. ``"bh256.nq4096.nk32768.d256.dv256"``.
    flags : str
        Anything else that changes the kernels' speed (e.g. ``"mask"``), or ``""``.
    flops : float
        Estimated FLOPs of the call (measuring starts at `MEASURE_MIN_FLOPS`).
    """

    device: torch.device
    dtype: torch.dtype
    shape: str
    flags: str
    flops: float


@dataclass(frozen=True)
class KernelOp:
    """An op with interchangeable implementations.

    Attributes
    ----------
    name : str
        Op name (``"attention"``).
    candidates : mapping of str to callable
        Implementations, each taking the op's arguments; results equal up to rounding.
    default : callable
        The built-in rule: the op's arguments -> a candidate name.
    key : callable
        The op's arguments -> `KernelKey`, or None when the call cannot be measured (the
        default rule is used).
    probe : callable or None
        ``(args, flops) -> args``: the part of a CPU call the candidates are timed on instead
        of the whole call, of about `flops` FLOPs or more: it must keep what sets the kernels'
        order (their buffers' working set), so it may be the whole call. None: time the whole
        call.
    screen : callable or None
        ``(args, flops) -> args``: a small part of about `flops` FLOPs that every candidate
        runs on first; those more than `SCREEN_SLOWDOWN` times slower than the fastest there
        are not timed on the probe (on the CPU, where a candidate can be 30x slower: bf16
        GEMMs without native bf16). None: no screen.
    """

    name: str
    candidates: Mapping[str, Callable[..., torch.Tensor]]
    default: Callable[..., str]
    key: Callable[..., KernelKey | None]
    probe: Callable[[tuple, float], tuple] | None = None
    screen: Callable[[tuple, float], tuple] | None = None


def next_pow2(n: int) -> int:
    """Smallest power of two >= `n` (1 for n <= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


def machine_fingerprint(device: torch.device | str = "cpu") -> str:
    """What measured choices are valid for: CPU model, core count, torch version, and the GPU's
    name for a CUDA / MPS device."""
    return _fingerprint(str(torch.device(device)))


@functools.lru_cache(maxsize=16)
def _fingerprint(device_name: str) -> str:
    device = torch.device(device_name)
    parts = [cpu_model(), f"{os.cpu_count()} cpus", f"torch {torch.__version__}"]
    if device.type == "cuda":
        parts.append(torch.cuda.get_device_name(device))
    elif device.type != "cpu":
        parts.append(device.type)
    return " | ".join(parts)


def default_cache_path() -> Path:
    """``$NAPARI_FOCSAM_KERNEL_CACHE``, else ``<user cache dir>/napari-focsam/kernels.json``."""
    env = os.environ.get(ENV_KERNEL_CACHE, "").strip()
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("napari-focsam")) / "kernels.json"
    except ImportError:  # pragma: no cover - a dependency
        return Path.home() / ".cache" / "napari-focsam" / "kernels.json"


def _tracing() -> bool:
    compiler = getattr(torch, "compiler", None)
    compiling = bool(compiler is not None and getattr(compiler, "is_compiling", None)
                     and compiler.is_compiling())
    return compiling or torch.jit.is_tracing() or torch.jit.is_scripting()


def _flops(op: KernelOp, args: tuple) -> float:
    """The op's FLOP estimate for `args` (a part of a call; inf when its key gives none)."""
    info = op.key(*args)
    return math.inf if info is None else info.flops


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


_UNSET = object()


class KernelRegistry:
    """Ops, their forced / measured choices and the file those are kept in.

    Parameters
    ----------
    cache_path : path or None
        The JSON file; default `default_cache_path` (read when first needed); None keeps
        choices in memory only.
    min_flops : float
        Measuring threshold (`MEASURE_MIN_FLOPS`).
    repeats : int
        Timed runs per candidate after one warm-up.
    probe_flops : float
        CPU calls above this many FLOPs are timed on a part (`PROBE_FLOPS`).
    """

    def __init__(self, cache_path: str | Path | None | object = _UNSET,
                 min_flops: float = MEASURE_MIN_FLOPS, repeats: int = REPEATS,
                 probe_flops: float = PROBE_FLOPS) -> None:
        self.ops: dict[str, KernelOp] = {}
        self._cache_path = cache_path
        self.min_flops = min_flops
        self.probe_flops = probe_flops
        self.repeats = max(1, int(repeats))
        self.enabled = True
        #: Measurements made (one per key), for tests and reports.
        self.measurements = 0
        self._forced: dict[str, str] = {}
        self._paused = 0
        self._memory: dict[str, dict[str, dict]] = {}  # fingerprint -> key -> entry
        self._loaded: set[str] = set()  # cache files read (their path)
        self._used: set[tuple[str, str]] = set()  # (fingerprint, key) chosen from measurements
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._env_text: str | None = None
        self._env: tuple[bool | None, dict[str, str]] = (None, {})

    # ------------------------------------------------------------------ registration, API
    def register(self, op: KernelOp) -> KernelOp:
        """Add (or replace) `op`."""
        if not op.candidates or any(name in (AUTO, DEFAULT) for name in op.candidates):
            raise ValueError(f"op {op.name!r}: candidates must be named, not {AUTO!r}/{DEFAULT!r}")
        self.ops[op.name] = op
        return op

    @property
    def cache_path(self) -> Path | None:
        """The JSON file choices are kept in (None: memory only)."""
        if self._cache_path is _UNSET:
            return default_cache_path()
        return None if self._cache_path is None else Path(self._cache_path)  # type: ignore[arg-type]

    def _check(self, op: str, name: str | None, source: str) -> None:
        if op not in self.ops:
            raise KernelChoiceError(f"{source}: unknown kernel op {op!r}; choose from "
                                    f"{', '.join(sorted(self.ops))}")
        if name is not None and name not in self.ops[op].candidates and name not in (AUTO, DEFAULT):
            valid = [AUTO, DEFAULT, *self.ops[op].candidates]
            raise KernelChoiceError(f"{source}: unknown {op} kernel {name!r}; choose from "
                                    f"{', '.join(valid)}")

    def set_forced(self, op: str, name: str | None) -> None:
        """Use candidate `name` for every call of `op` (``"default"``: the built-in rule,
        ``"auto"`` or None: back to the environment / measuring)."""
        self._check(op, name, "set_forced")
        if name is None or name == AUTO:
            self._forced.pop(op, None)
        else:
            self._forced[op] = name

    @contextlib.contextmanager
    def force(self, op: str, name: str | None) -> Iterator[None]:
        """`set_forced` for the duration of a ``with`` block (process-wide), then restored."""
        self._check(op, name, "force")
        before = self._forced.get(op)
        self.set_forced(op, name)
        try:
            yield
        finally:
            if before is None:
                self._forced.pop(op, None)
            else:
                self._forced[op] = before

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No measuring inside the block (remembered choices still apply; new keys take the
        default rule). For FLOP counting and other instrumented runs."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def choices(self) -> dict[str, dict[str, dict]]:
        """The measured choices used in this process (measured now or read from the cache):
        fingerprint -> key -> ``choice``, ``fastest``, ``default``, ``seconds`` (per candidate
        timed on the probe), ``screen_seconds`` (when screened) ..."""
        out: dict[str, dict[str, dict]] = {}
        for fp, key in sorted(self._used):
            out.setdefault(fp, {})[key] = dict(self._memory[fp][key])
        return out

    # ------------------------------------------------------------------ environment
    def env_settings(self) -> tuple[bool | None, dict[str, str]]:
        """``(switch, forced)`` from `ENV_KERNELS`: switch True (measure), False (default rules)
        or None (not said); forced op -> candidate or ``"default"``."""
        text = os.environ.get(ENV_KERNELS, "")
        if text != self._env_text:
            self._env = self._parse_env(text)
            self._env_text = text
        return self._env

    def _parse_env(self, text: str) -> tuple[bool | None, dict[str, str]]:
        switch: bool | None = None
        forced: dict[str, str] = {}
        source = f"{ENV_KERNELS}={text!r}"
        for token in (t.strip() for t in text.split(",")):
            if not token:
                continue
            if "=" not in token:
                word = token.lower()
                if word in _OFF_WORDS:
                    switch = False
                elif word in _ON_WORDS:
                    switch = True
                else:
                    raise KernelChoiceError(
                        f"{source}: expected 'off', 'default', 'auto' or op=kernel pairs "
                        f"(ops: {', '.join(sorted(self.ops))}), got {token!r}")
                continue
            op, _, name = (s.strip() for s in token.partition("="))
            name = name.lower()
            self._check(op, name, source)
            if name != AUTO:
                forced[op] = name
        return switch, forced

    # ------------------------------------------------------------------ choosing
    def run(self, op_name: str, *args: torch.Tensor | None) -> torch.Tensor:
        """Run op `op_name` on `args` with the chosen candidate (measuring first if needed)."""
        op = self.ops[op_name]
        name, measure_key = self._choose(op, args)
        if measure_key is None:
            return op.candidates[name](*args)
        return self._measure(op, measure_key, args)

    def choose(self, op_name: str, *args: torch.Tensor | None) -> str:
        """The candidate a call would use now, without measuring (a key not measured yet: the
        default rule)."""
        op = self.ops[op_name]
        name, measure_key = self._choose(op, args)
        return op.default(*args) if measure_key is not None else name

    def _choose(self, op: KernelOp, args: tuple) -> tuple[str, tuple | None]:
        """``(candidate, None)``, or ``(default, (fingerprint, key, KernelKey))`` to measure."""
        if _tracing():
            return op.default(*args), None
        forced = self._forced.get(op.name)
        switch, env_forced = self.env_settings()
        if forced is None:
            forced = env_forced.get(op.name)
        if forced is not None:
            return (op.default(*args) if forced == DEFAULT else forced), None
        if switch is False or not self.enabled:
            return op.default(*args), None
        info = op.key(*args)
        if info is None or info.flops < self.min_flops:
            return op.default(*args), None
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad
                                           for a in args):
            return op.default(*args), None
        fingerprint = machine_fingerprint(info.device)
        threads = torch.get_num_threads() if info.device.type == "cpu" else 0
        key = "|".join([op.name, info.device.type, str(info.dtype).replace("torch.", ""),
                        info.shape, f"t{threads}", info.flags or "-"])
        entry = self._lookup(fingerprint, key)
        if entry is not None and entry.get("choice") in op.candidates:
            self._used.add((fingerprint, key))
            return entry["choice"], None
        if self._paused:
            return op.default(*args), None
        return op.default(*args), (fingerprint, key, info)

    def _lookup(self, fingerprint: str, key: str) -> dict | None:
        entry = self._memory.get(fingerprint, {}).get(key)
        if entry is not None:
            return entry
        path = self.cache_path
        if path is not None and str(path) not in self._loaded:
            self._loaded.add(str(path))
            for fp, entries in self._read(path).items():
                mine = self._memory.setdefault(fp, {})
                for k, v in entries.items():
                    mine.setdefault(k, v)
        return self._memory.get(fingerprint, {}).get(key)

    def _measure(self, op: KernelOp, measure_key: tuple, args: tuple) -> torch.Tensor:
        fingerprint, key, info = measure_key
        default = op.default(*args)
        if not self._lock.acquire(blocking=False):  # another thread is measuring: don't wait
            return op.candidates[default](*args)
        try:
            timed_args, timed_flops = self._timed_part(op, args, info)
            whole = timed_args is args
            names, screened = list(op.candidates), {}
            with torch.no_grad():
                if op.screen is not None and not whole:
                    small = op.screen(args, self.probe_flops)
                    if 2 * _flops(op, small) <= timed_flops:  # a screen only where it is cheap
                        screened, _ = self._time_all(op, names, small, info.device, key, 1, None)
                        fastest = min(screened.values(), default=None)
                        names = [n for n in names if fastest is not None and n in screened
                                 and screened[n] <= SCREEN_SLOWDOWN * fastest]
                times, outputs = self._time_all(op, names, timed_args, info.device, key,
                                                self.repeats, default if whole else None)
            self.measurements += 1
            if not times:  # nothing ran: the default rule raises its own error
                return op.candidates[default](*args)
            fastest = min(times, key=times.__getitem__)
            choice = (default if default in times and times[fastest] > (1 - MIN_GAIN) * times[default]
                      else fastest)
            entry = {"choice": choice, "fastest": fastest, "default": default, "seconds": times,
                     "flops": info.flops, "timed_flops": timed_flops,
                     "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
            if screened:
                entry["screen_seconds"] = screened
            self._memory.setdefault(fingerprint, {})[key] = entry
            self._used.add((fingerprint, key))
            self._log_choice(key, entry)
            self._save(fingerprint, key, entry)
            return outputs[choice] if whole else op.candidates[choice](*args)
        finally:
            self._lock.release()

    def _timed_part(self, op: KernelOp, args: tuple, info: KernelKey) -> tuple[tuple, float]:
        """What the candidates are timed on, and its FLOPs: on the CPU, a call above
        `probe_flops` is cut to the op's probe; otherwise (or when the probe is the whole call)
        `args` itself."""
        if op.probe is not None and info.device.type == "cpu" and info.flops > self.probe_flops:
            part = op.probe(args, self.probe_flops)
            part_flops = _flops(op, part)
            if part_flops < info.flops:
                return part, part_flops
        return args, info.flops

    def _time_all(self, op: KernelOp, names: list[str], args: tuple, device: torch.device,
                  key: str, repeats: int, default: str | None
                  ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Seconds of each candidate in `names` on `args` (those that failed left out), and the
        outputs of `default` and the fastest when `default` is given (else none kept)."""
        times: dict[str, float] = {}
        outputs: dict[str, torch.Tensor] = {}
        for name in names:
            try:  # a candidate may not support this input (or run out of memory)
                times[name], out = self._time(op.candidates[name], args, device,
                                              min(times.values(), default=None), repeats)
            except Exception as exc:
                logger.debug("kernel %s for %s failed: %s", name, key, exc)
                continue
            if default is not None:
                outputs[name] = out
                fastest = min(times, key=times.__getitem__)
                for other in [n for n in outputs if n not in (default, fastest)]:
                    del outputs[other]
            del out
        return times, outputs

    @staticmethod
    def _log_choice(key: str, entry: dict) -> None:
        times = entry["seconds"]
        listed = ", ".join(f"{n} {t * 1e3:.2f} ms" for n, t in times.items())
        dropped = sorted(set(entry.get("screen_seconds", {})) - set(times))
        if dropped:
            listed += f"; screened out: {', '.join(dropped)}"
        choice, fastest = entry["choice"], entry["fastest"]
        if choice == fastest:
            logger.info("kernel %s: %s (%s)", key, choice, listed)
        else:
            gain = 1 - times[fastest] / times[choice]
            logger.info("kernel %s: %s, the default, kept on a near tie: %s only %.0f%% faster "
                        "(needs %.0f%%) (%s)", key, choice, fastest, 100 * gain, 100 * MIN_GAIN,
                        listed)

    def _time(self, fn: Callable[..., torch.Tensor], args: tuple, device: torch.device,
              best_so_far: float | None, repeats: int) -> tuple[float, torch.Tensor]:
        """Min seconds of `repeats` runs after a warm-up, and the last output.

        A candidate much slower than the best so far (warm-up over `SLOW_S` and 20x the best)
        is not run again: its warm-up time stands. A first timed run over `SLOW_S` ends the
        repeats.
        """
        start = time.perf_counter()
        out = fn(*args)  # warm-up
        _synchronise(device)
        warmup = time.perf_counter() - start
        if best_so_far is not None and warmup > max(SLOW_S, 20 * best_so_far):
            return warmup, out
        best = float("inf")
        for _ in range(repeats):
            del out
            start = time.perf_counter()
            out = fn(*args)
            _synchronise(device)
            best = min(best, time.perf_counter() - start)
            if best > SLOW_S:
                break
        return best, out

    # ------------------------------------------------------------------ the cache file
    def _warn_once(self, what: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        if what not in self._warned:
            self._warned.add(what)
            logger.log(level, message, *args)

    def _read(self, path: Path) -> dict[str, dict[str, dict]]:
        """The file's ``machines`` (empty when missing, unreadable or corrupt)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            self._warn_once(f"read {path}", "kernel cache %s cannot be read (%s); kernel choices "
                            "are measured again", path, exc)
            return {}
        try:
            data = json.loads(text)
            if isinstance(data, dict) and data.get("version") != CACHE_VERSION:
                self._warn_once(f"version {path}", "kernel cache %s has layout version %s, not %s: "
                                "it is ignored and will be rewritten", path, data.get("version"),
                                CACHE_VERSION, level=logging.INFO)
                return {}
            machines = data["machines"]
            if not isinstance(machines, dict) or not all(
                    isinstance(e, dict) and all(isinstance(v, dict) for v in e.values())
                    for e in machines.values()):
                raise ValueError("unexpected layout")
        except (ValueError, KeyError, TypeError) as exc:
            self._warn_once(f"corrupt {path}", "kernel cache %s is corrupt (%s); it is ignored "
                            "and will be rewritten", path, exc)
            return {}
        return machines

    def _save(self, fingerprint: str, key: str, entry: dict) -> None:
        path = self.cache_path
        if path is None:
            return
        machines = self._read(path)  # merge with what other processes wrote meanwhile
        for fp, entries in self._memory.items():
            machines.setdefault(fp, {}).update(entries)
        machines.setdefault(fingerprint, {})[key] = entry
        text = json.dumps({"version": CACHE_VERSION, "machines": machines}, indent=1, sort_keys=True)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            self._warn_once(f"write {path}", "kernel cache %s cannot be written (%s); kernel "
                            "choices are kept in memory", path, exc, level=logging.INFO)
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


#: The process's registry (what `models.common.attend` uses).
REGISTRY = KernelRegistry()


def register(op: KernelOp) -> KernelOp:
    """Add `op` to the process's registry."""
    return REGISTRY.register(op)


def run(op_name: str, *args: torch.Tensor | None) -> torch.Tensor:
    """Run `op_name` with the chosen candidate (`KernelRegistry.run`)."""
    return REGISTRY.run(op_name, *args)


def force(op: str, name: str | None) -> contextlib.AbstractContextManager[None]:
    """Context manager: use candidate `name` for `op` (`KernelRegistry.force`)."""
    return REGISTRY.force(op, name)


def set_forced(op: str, name: str | None) -> None:
    """Use candidate `name` for `op` from now on (None: lift)."""
    REGISTRY.set_forced(op, name)


def set_selection(enabled: bool) -> None:
    """Turn measuring on or off process-wide (off: the default rules, unless forced)."""
    REGISTRY.enabled = bool(enabled)


def paused() -> contextlib.AbstractContextManager[None]:
    """Context manager: no measuring inside (`KernelRegistry.paused`)."""
    return REGISTRY.paused()


def choices() -> dict[str, dict[str, dict]]:
    """The kernel choices known in this process (`KernelRegistry.choices`)."""
    return REGISTRY.choices()
