"""Exit codes of the ``napari-focsam`` commands and the mapping from errors to them."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

__all__ = ["EXIT_CACHE", "EXIT_CANCELLED", "EXIT_INPUT", "EXIT_OK", "run_with_exit_codes"]

logger = logging.getLogger("napari_focsam")

EXIT_OK, EXIT_INPUT, EXIT_CACHE, EXIT_CANCELLED = 0, 2, 6, 130


def run_with_exit_codes(run: Callable[[], int], interrupted: str,
                        input_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Call `run` and turn the errors users can cause into messages and exit codes.

    0 done; 2 bad input (ValueError, missing files, and `input_errors`); 3 download failed;
    4 hash / verification failed; 5 offline and not cached; 6 the embedding cache cannot be
    used; 130 interrupted (`interrupted` is printed).
    """
    from .cli_weights import EXIT_DOWNLOAD, EXIT_OFFLINE, EXIT_VERIFY
    from .store import CacheError
    from .weights import (
        DownloadError,
        HashMismatchError,
        WeightsNotAvailableError,
        WeightsVerificationError,
    )

    try:
        return run()
    except KeyboardInterrupt:
        sys.stderr.write(f"napari-focsam: interrupted; {interrupted}\n")
        return EXIT_CANCELLED
    except WeightsNotAvailableError as exc:
        return _fail(exc, EXIT_OFFLINE)
    except (HashMismatchError, WeightsVerificationError) as exc:
        return _fail(exc, EXIT_VERIFY)
    except DownloadError as exc:
        return _fail(exc, EXIT_DOWNLOAD)
    except CacheError as exc:
        return _fail(exc, EXIT_CACHE)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, *input_errors) as exc:
        return _fail(exc, EXIT_INPUT)


def _fail(exc: BaseException, code: int) -> int:
    sys.stderr.write(f"napari-focsam: error: {exc}\n")
    logger.debug("details", exc_info=exc)
    return code
