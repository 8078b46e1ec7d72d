"""What the CPU can do: its model name and whether it has native bf16 matrix maths.

One place for both the kernel registry (`napari_focsam.models.kernels`: machine fingerprint,
default rules) and the encoder precision choice (`napari_focsam.engine.precision`). Results
are cached per process; nothing here imports torch.
"""

from __future__ import annotations

import functools
import logging
import platform
import subprocess

__all__ = ["X86_BF16_FLAGS", "cpu_model", "cpu_native_bf16", "read_cpuinfo_flags"]

logger = logging.getLogger(__name__)

#: Linux ``/proc/cpuinfo`` flags of x86 CPUs with native bf16 GEMMs.
X86_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def read_cpuinfo_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """CPU feature flags (``flags`` / ``Features`` lines) from Linux ``/proc/cpuinfo``; empty
    when unreadable."""
    flags: set[str] = set()
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    flags.update(value.split())
    except OSError as err:
        logger.debug("could not read %s: %s", path, err)
    return frozenset(flags)


def macos_sysctl_bf16() -> bool:
    """Whether ``sysctl hw.optional.arm.FEAT_BF16`` reports 1 (False when unavailable)."""
    try:
        result = subprocess.run(
            ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as err:
        logger.debug("sysctl failed: %s", err)
        return False
    return result.returncode == 0 and result.stdout.strip() == "1"


@functools.lru_cache(maxsize=1)
def cpu_native_bf16() -> bool:
    """Whether this CPU executes bf16 matrix maths natively (cached).

    Returns
    -------
    bool
        Linux: ``avx512_bf16`` or ``amx_bf16`` among the ``/proc/cpuinfo`` flags. macOS on
        arm64: ``sysctl hw.optional.arm.FEAT_BF16`` is 1. Anything else: False (where bf16 is
        emulated, bf16 GEMMs are several times slower than fp32 ones).
    """
    system, machine = platform.system(), platform.machine().lower()
    if system == "Linux":
        found = sorted(X86_BF16_FLAGS & read_cpuinfo_flags())
        logger.debug("native bf16 CPU flags: %s", found or "none")
        return bool(found)
    if system == "Darwin" and machine in ("arm64", "aarch64"):
        return macos_sysctl_bf16()
    return False


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what `platform` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
