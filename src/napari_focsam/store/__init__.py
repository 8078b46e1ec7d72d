"""Embedding store: run the image encoder once per image / stack, reuse the features.

- :mod:`.stack_source` -- lazy ``(H, W, 3)`` uint8 frames of 2D / 3D / 4D array-likes,
- :mod:`.contrast` -- one contrast stretch (percentile limits) for a whole stack,
- :mod:`.hashing` -- streaming content hashes and cache keys,
- :mod:`.ram_cache` -- thread-safe LRU bounded by bytes,
- :mod:`.cache_spec` -- what a cache entry holds, where entries live, the cache errors,
- :mod:`.disk_cache` -- resumable zarr cache entries with validation and checksums,
- :mod:`.encoder_base` -- the encoder protocol and shared helpers,
- :mod:`.encoders`, :mod:`.sam2_encoder` -- SAM / FocSAM and SAM 2 adapters (encode in
  batches, rebuild the predictors' features),
- :mod:`.embedding_store` -- `EmbeddingStore`, tying them together (a propagation
  ``FeatureProvider``), and :mod:`.views` -- its progress steps and per-outer-index views,
- :mod:`.tiles` -- the tiles of a stack's large frames as the items of a store.
"""

from .cache_spec import (
    ENV_CACHE_DIR,
    CacheCorruptError,
    CacheError,
    CacheMismatchError,
    CacheSpec,
    CacheWriteError,
    default_cache_root,
    resolve_cache_root,
)
from .contrast import apply_limits
from .disk_cache import DiskCache
from .embedding_store import EmbeddingStore
from .encoder_base import FrameEncoder, model_fingerprint
from .encoders import SamEncoder
from .hashing import cache_key, content_hash
from .ram_cache import RamCache, estimate_nbytes
from .sam2_encoder import Sam2Encoder
from .stack_source import StackError, StackSource
from .tiles import TileSource, tiled_content_hash
from .views import ComputeProgress, StackView

__all__ = [
    "ENV_CACHE_DIR",
    "CacheCorruptError",
    "CacheError",
    "CacheMismatchError",
    "CacheSpec",
    "CacheWriteError",
    "ComputeProgress",
    "DiskCache",
    "EmbeddingStore",
    "FrameEncoder",
    "RamCache",
    "Sam2Encoder",
    "SamEncoder",
    "StackError",
    "StackSource",
    "StackView",
    "TileSource",
    "apply_limits",
    "cache_key",
    "content_hash",
    "default_cache_root",
    "estimate_nbytes",
    "model_fingerprint",
    "resolve_cache_root",
    "tiled_content_hash",
]
