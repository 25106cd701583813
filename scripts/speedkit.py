"""A1111 glue for sd-webui-speedkit: the AlwaysVisible script. Thin by design; the logic lives in
lib_speedkit (host-independent) and lib_speedkit.webui (the adapter package)."""

from modules import scripts
from modules.infotext_utils import PasteField
from modules.ui_components import InputAccordion

from lib_speedkit import ui
from lib_speedkit.script_args import SCRIPT_TITLE
from lib_speedkit.webui import attention, availability, hooks, lifecycle, options

lifecycle.install()  # after every import above: a failed import leaves the WebUI untouched


class SpeedkitScript(scripts.Script):
    section = "accordions"
    create_group = False

    def title(self):
        return SCRIPT_TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        controls = ui.build_controls(
            self.elem_id,
            attention.backend_choices(),
            availability.unavailable_switches(),
            InputAccordion,
            attention.FORGE_NOTE if attention.is_forge() else None,
            options.default_mode(),
        )
        self.infotext_fields = ui.paste_fields(controls, PasteField)
        return controls.inputs()

    def before_process(self, p, *args):
        hooks.prepare_generation(p, args)

    def process(self, p, *args):
        hooks.activate_generation(p)

    def before_hr(self, p, *args):
        hooks.before_hires(p)

    def process_before_every_sampling(self, p, *args, **kwargs):
        hooks.before_sampling(p)

    def post_sample(self, p, ps, *args):
        hooks.after_sampling(p)

    def postprocess(self, p, processed, *args):
        hooks.finish_generation(p)
