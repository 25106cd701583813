"""Which files slimming may read and where it may write: the WebUI's own model folders only.

A checkpoint is named by its title in the WebUI's checkpoint list, or by a path whose real
location (symlinks resolved) lies inside one of the WebUI's checkpoint folders; a VAE likewise by
its name in the VAE list or a path inside a VAE or checkpoint folder. Anything else is refused
with the same message whether it exists or not, so a refusal tells nothing about other folders.
The output goes beside the checkpoint when that folder is one of the WebUI's, else into the
main checkpoint folder (a `--ckpt` file elsewhere, say): slimming never writes anywhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

from modules import sd_models, sd_vae, shared

from ..errors import PlanError

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
CHECKPOINT_ALLOWED = "a checkpoint from the WebUI's list, or a file inside its checkpoint folders"
VAE_ALLOWED = "a VAE from the WebUI's list, a file inside its VAE or checkpoint folders, or None"


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(path)))


def checkpoint_folders() -> list[Path]:
    """The real paths of the folders the WebUI lists checkpoints from (the first is the main one)."""
    folders = [getattr(shared.cmd_opts, "ckpt_dir", None), sd_models.model_path]
    return _existing_real(folders)


def vae_folders() -> list[Path]:
    folders = [getattr(shared.cmd_opts, "vae_dir", None), getattr(sd_vae, "vae_path", None)]
    return _existing_real(folders) + checkpoint_folders()


def _existing_real(folders) -> list[Path]:
    found: list[Path] = []
    for folder in folders:
        if folder and os.path.isdir(folder) and _real(folder) not in found:
            found.append(_real(folder))
    return found


def is_inside(path: Path, folders: list[Path]) -> bool:
    """True when the real `path` lies inside one of `folders` (real paths)."""
    real = _real(path)
    return any(real.is_relative_to(folder) for folder in folders)


def listed_checkpoint(name: str):
    """The CheckpointInfo the WebUI lists under `name` (title, name, or its file's path)."""
    info = sd_models.checkpoints_list.get(name)
    if info is not None:
        return info
    real = _real(name) if name else None
    for info in sd_models.checkpoints_list.values():
        if real is not None and _real(info.filename) == real:
            return info
    return sd_models.get_closet_checkpoint_match(name) if name else None


def resolve_checkpoint(name: str) -> tuple[Path, Path]:
    """(the checkpoint file, the folder the output goes to); PlanError("checkpoint") otherwise."""
    info = listed_checkpoint(name)
    if info is not None:
        source = Path(os.path.abspath(info.filename))
    elif Path(name).suffix.lower() in CHECKPOINT_SUFFIXES and is_inside(Path(name), checkpoint_folders()):
        source = Path(os.path.abspath(name))
    else:
        raise PlanError("checkpoint", name, CHECKPOINT_ALLOWED)
    if not source.is_file():
        raise PlanError("checkpoint", name, CHECKPOINT_ALLOWED + " (no such file in the list)")
    return source, output_folder(source)


def output_folder(source: Path) -> Path:
    """Beside the source when that folder is one of the WebUI's checkpoint folders, else the main one."""
    folders = checkpoint_folders()
    if is_inside(source.parent, folders):
        return source.parent
    if not folders:
        raise PlanError("checkpoint", str(source.name), "a WebUI with a checkpoint folder to write to")
    return folders[0]


def resolve_vae(name: str) -> Path | None:
    """The VAE file to bake in (None for "None"); PlanError("vae") otherwise."""
    if not name or name == "None":
        return None
    sd_vae.refresh_vae_list()
    if name in sd_vae.vae_dict:
        return Path(sd_vae.vae_dict[name])
    path = Path(name)
    if path.suffix.lower() in CHECKPOINT_SUFFIXES and is_inside(path, vae_folders()) and path.is_file():
        return Path(os.path.abspath(name))
    raise PlanError("vae", name, VAE_ALLOWED)
