"""Causal Forcing student core: pure PyTorch, usable without ComfyUI.

The main entry points are re-exported here; see :mod:`.stream` for the stream semantics.
"""

from .config import DIT_PRESETS, SAMPLER_PRESETS, DiTConfig, SamplerConfig, sampler_preset
from .dit import CausalWanModel
from .errors import (
    CacheBudgetError,
    CausalForcingError,
    CheckpointError,
    InvalidInputError,
    StreamStateError,
    UnsafeCheckpointError,
)
from .geometry import WAN21, VideoGeometry
from .kv_cache import AttentionCache, BlockCache, KVCache, TextKV
from .noise import SeededNoise
from .prompt import Prompt
from .sampling import sample_block
from .scheduler import FlowMatchScheduler
from .stream import Stream, start_stream

__all__ = [
    "DIT_PRESETS", "SAMPLER_PRESETS", "DiTConfig", "SamplerConfig", "sampler_preset", "CausalWanModel",
    "CausalForcingError", "InvalidInputError", "CheckpointError", "UnsafeCheckpointError", "CacheBudgetError",
    "StreamStateError", "KVCache", "TextKV", "AttentionCache", "BlockCache", "SeededNoise", "FlowMatchScheduler",
    "Prompt", "Stream", "start_stream", "sample_block", "WAN21", "VideoGeometry",
]
