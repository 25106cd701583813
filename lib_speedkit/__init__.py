"""sd-webui-speedkit's host-independent library.

Core modules import only torch and the standard library (tomesd lazily, for ToMe); the one
module that knows the AUTOMATIC1111 WebUI is `lib_speedkit.webui`.
"""

from .apply import AppliedPlan, apply_plan
from .errors import BackendUnavailable, PatchConflict, PlanError, SpeedkitError
from .plan import (
    AttentionConfig,
    ChannelsLastConfig,
    GuidanceCutoffConfig,
    SpeedPlan,
    TokenMergingConfig,
    format_infotext,
    parse_infotext,
)

__version__ = "0.1.0"

__all__ = [
    "AppliedPlan",
    "AttentionConfig",
    "BackendUnavailable",
    "ChannelsLastConfig",
    "GuidanceCutoffConfig",
    "PatchConflict",
    "PlanError",
    "SpeedPlan",
    "SpeedkitError",
    "TokenMergingConfig",
    "apply_plan",
    "format_infotext",
    "parse_infotext",
]
