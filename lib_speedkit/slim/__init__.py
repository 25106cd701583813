"""Checkpoint slimming: a checkpoint -> a pruned fp16/bf16 safetensors file, optionally with a VAE
baked in, written as a stream with bounded memory; plus the read-speed measurement.

Host-independent: the WebUI adapter (lib_speedkit.webui.slim) adds the load test and the images.
"""

from .convert import SlimConfig, SlimReport, output_path, plan_keys, slim_checkpoint
from .keys import Architecture, detect_architecture
from .safetensors_io import SlimError
from .sources import open_checkpoint

__all__ = [
    "Architecture",
    "SlimConfig",
    "SlimError",
    "SlimReport",
    "detect_architecture",
    "open_checkpoint",
    "output_path",
    "plan_keys",
    "slim_checkpoint",
]
