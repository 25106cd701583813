"""A1111 glue for sd-webui-speedkit: the AlwaysVisible script. Thin by design; the logic lives in
lib_speedkit (host-independent) and lib_speedkit.webui (the adapter package)."""

from modules import scripts
from modules.infotext_utils import PasteField
from modules.ui_components import InputAccordion

from lib_speedkit import ui
from lib_speedkit.webui import bench, switches

switches.install()
bench.install()


class SpeedkitScript(scripts.Script):
    section = "accordions"
    create_group = False

    def title(self):
        return switches.SCRIPT_TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        controls = ui.build_controls(
            self.elem_id,
            switches.backend_choices(),
            switches.unavailable_backends(),
            InputAccordion,
            switches.FORGE_NOTE if switches.is_forge() else None,
        )
        self.infotext_fields = ui.paste_fields(controls, PasteField)
        return controls.inputs()

    def before_process(self, p, *args):
        switches.prepare_generation(p, args)

    def process(self, p, *args):
        switches.activate_generation(p)

    def before_hr(self, p, *args):
        switches.before_hires(p)

    def process_before_every_sampling(self, p, *args, **kwargs):
        switches.before_sampling(p)

    def postprocess(self, p, processed, *args):
        switches.finish_generation(p)
