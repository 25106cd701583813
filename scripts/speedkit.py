"""A1111 glue for sd-webui-speedkit: the AlwaysVisible script. Thin by design; the logic lives in
lib_speedkit (host-independent) and lib_speedkit.webui (the adapter)."""

from modules import scripts
from modules.infotext_utils import PasteField
from modules.ui_components import InputAccordion

from lib_speedkit import ui, webui

webui.install()


class SpeedkitScript(scripts.Script):
    section = "accordions"
    create_group = False

    def title(self):
        return webui.SCRIPT_TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        controls = ui.build_controls(
            self.elem_id,
            webui.backend_choices(),
            webui.unavailable_backends(),
            InputAccordion,
            webui.FORGE_NOTE if webui.is_forge() else None,
        )
        self.infotext_fields = ui.paste_fields(controls, PasteField)
        return controls.inputs()

    def before_process(self, p, *args):
        webui.prepare_generation(p, args)

    def process(self, p, *args):
        webui.activate_generation(p)

    def before_hr(self, p, *args):
        webui.before_hires(p)

    def postprocess(self, p, processed, *args):
        webui.finish_generation(p)
