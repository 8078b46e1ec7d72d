"""Pick the device and the image-encoder precision.

bf16 autocast speeds the ViT encoders up only where the CPU has native bf16 instructions
(AVX512-BF16 / AMX on x86, FEAT_BF16 on Apple silicon); elsewhere it is emulated and slower
than fp32, so ``"auto"`` picks it only on such CPUs (`napari_focsam.models.cpu.cpu_native_bf16`,
the detection the kernel registry's default rules use too). Mask decoders always run in fp32.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from ..errors import UserError
from ..models import cpu

__all__ = [
    "DeviceError",
    "DtypeError",
    "autocast_context",
    "fp32_context",
    "resolve_device",
    "resolve_encoder_dtype",
]

logger = logging.getLogger(__name__)

_DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


class DeviceError(UserError, ValueError):
    """The requested device is unknown or not available on this machine."""


class DtypeError(UserError, ValueError):
    """The requested encoder precision is unknown."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device request into an available `torch.device`.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA if available, else MPS if available, else CPU) or any torch device
        spelling (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ...).

    Returns
    -------
    torch.device

    Raises
    ------
    DeviceError
        The name is not a device, or the device is not available here.
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise DeviceError(
            f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from err
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} was requested but CUDA is not available (torch "
                f"{torch.__version__}); use device='auto' or 'cpu'."
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"device {device!r} does not exist: this machine has {count} GPU(s).")
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceError(
                f"device {device!r} was requested but Apple MPS is not available; use "
                "device='auto' or 'cpu'."
            )
        return dev
    backend = getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    if callable(is_available) and is_available():
        return dev
    raise DeviceError(f"device {device!r} is not available on this machine.")


def resolve_encoder_dtype(device: torch.device, dtype: str | torch.dtype = "auto") -> torch.dtype:
    """Choose the autocast precision of the image encoder.

    Parameters
    ----------
    device : torch.device
        Where the encoder runs (see `resolve_device`).
    dtype : str or torch.dtype
        ``"auto"``, ``"fp32"``/``"float32"``, ``"bf16"``/``"bfloat16"`` or
        ``"fp16"``/``"float16"`` (or the corresponding torch dtype).

    Returns
    -------
    torch.dtype
        For ``"auto"``: bf16 on a CPU with native bf16, bf16 on a CUDA GPU that supports it,
        fp16 on MPS, fp32 otherwise. Otherwise the requested dtype.

    Raises
    ------
    DtypeError
        Unknown precision name.
    """
    device = torch.device(device)
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPE_NAMES.values():
            raise DtypeError(
                f"encoder dtype {dtype} is not supported; expected fp32, bf16 or fp16."
            )
        chosen = dtype
    else:
        name = str(dtype).strip().lower()
        if name == "auto":
            chosen = _auto_dtype(device)
            logger.debug("encoder precision for %s: %s", device, chosen)
            return chosen
        if name not in _DTYPE_NAMES:
            raise DtypeError(
                f"unknown encoder dtype {dtype!r}; expected 'auto', 'fp32', 'bf16' or 'fp16'."
            )
        chosen = _DTYPE_NAMES[name]
    if chosen != torch.float32 and not _autocast_supported(device.type):
        raise DtypeError(
            f"encoder dtype {chosen} needs autocast on {device.type}, which torch "
            f"{torch.__version__} does not support there; use 'fp32' or a newer torch."
        )
    if device.type == "cpu" and chosen == torch.bfloat16 and not cpu.cpu_native_bf16():
        logger.warning(
            "bf16 was requested on a CPU without native bf16 support; it will be emulated and "
            "is likely slower than fp32."
        )
    return chosen


def _autocast_supported(device_type: str) -> bool:
    """Whether this torch has autocast for `device_type` (MPS only from torch 2.5 on)."""
    check = getattr(torch.amp, "is_autocast_available", None)
    if check is not None:
        return bool(check(device_type))
    try:
        torch.autocast(device_type, enabled=False)
    except RuntimeError:
        return False
    return True


def _auto_dtype(device: torch.device) -> torch.dtype:
    if not _autocast_supported(device.type):
        return torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu.cpu_native_bf16() else torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "mps":
        return torch.float16
    return torch.float32


def autocast_context(
    device: torch.device, dtype: torch.dtype
) -> contextlib.AbstractContextManager[object]:
    """Context manager that runs the encoder in `dtype` on `device`.

    Parameters
    ----------
    device : torch.device
        Device the encoder runs on.
    dtype : torch.dtype
        Encoder precision; fp32 means no autocast at all.

    Returns
    -------
    contextlib.AbstractContextManager
        ``torch.autocast(device.type, dtype=dtype)``, or ``contextlib.nullcontext()`` for fp32.
    """
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def fp32_context(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Context manager that switches off any enclosing autocast on `device` (decoders).

    Parameters
    ----------
    device : torch.device
        Device the computation runs on.

    Returns
    -------
    contextlib.AbstractContextManager
        ``torch.autocast(device.type, enabled=False)``, or ``contextlib.nullcontext()`` where
        torch has no autocast for that device (so nothing can be enabled there either).
    """
    device_type = torch.device(device).type
    if not _autocast_supported(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)
