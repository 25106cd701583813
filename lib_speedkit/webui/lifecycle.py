"""Everything Speedkit registers with the WebUI, in one table, and taking it out again.

Every adapter module is imported at the top of this module, so a failing import (a platform
without some module, a missing dependency) fails before anything is installed: the WebUI is
then left exactly as without the extension.
"""

from __future__ import annotations

from modules import script_callbacks

from . import api, attention, compiled, fast_path, hooks, host_patches, options, tab, xyz


def _add_kernel_optimizers(optimizers: list) -> None:
    optimizers.extend(attention.make_kernel_optimizers())


def unload() -> None:
    """Restore the generations in progress and remove the patches (before a UI reload)."""
    hooks.finish_all()
    host_patches.remove_patches()
    fast_path.release_graphs()
    compiled.release()
    compiled.disconnect()
    _State.installed = False


CALLBACKS = (
    (script_callbacks.on_list_optimizers, _add_kernel_optimizers, "speedkit_kernels"),
    (script_callbacks.on_cfg_denoised, hooks.on_cfg_denoised, "speedkit_similarity"),
    (script_callbacks.on_app_started, api.add_routes, "speedkit_routes"),
    (script_callbacks.on_before_ui, xyz.add_axes, "speedkit_xyz"),
    (script_callbacks.on_ui_tabs, tab.create_tab, "speedkit_tab"),
    (script_callbacks.on_ui_settings, options.add_settings, "speedkit_settings"),
    (script_callbacks.on_model_loaded, fast_path.release_graphs, "speedkit_release_graphs"),
    (script_callbacks.on_model_loaded, compiled.release, "speedkit_release_compiled"),
    (script_callbacks.on_script_unloaded, unload, "speedkit_unload"),
)
"""(registration function, callback, name): every callback Speedkit adds."""


class _State:
    installed = False


def install() -> None:
    """Install the patches and callbacks (idempotent); scripts/speedkit.py calls it at import."""
    if _State.installed:
        return
    host_patches.install_patches()
    compiled.use_cache_folders()
    compiled.connect()
    for register, callback, name in CALLBACKS:
        register(callback, name=name)
    _State.installed = True
