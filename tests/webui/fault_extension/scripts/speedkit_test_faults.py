"""Test-only WebUI extension (tier 2 links it in; users never install it).

Makes the UNet raise at a chosen call during sampling — a RuntimeError or torch.OutOfMemoryError —
so the tests can prove that Speedkit restores everything when sampling fails.
API args: [fail_after_unet_calls (-1 = never), kind ("error" | "oom" | "probe")].
"probe" fails nothing: at the first UNet call it writes what Speedkit's pass-level switches look
like from inside sampling into the infotext ("Speedkit test probe": the forward of nn.Linear and
whether the UNet's forward is replaced on the instance).
"""

import gradio as gr
import torch
from modules import scripts, shared


class SpeedkitTestFaults(scripts.Script):
    def title(self):
        return "Speedkit test faults"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [
            gr.Number(value=-1, label="fail after UNet calls", precision=0),
            gr.Textbox(value="error", label="kind"),
        ]

    def process(self, p, fail_after, kind):
        if kind == "probe":
            self._probe(p)
            return
        if fail_after is None or fail_after < 0:
            return
        calls = [0]

        def fail_at_call(_module, _args):
            calls[0] += 1
            if calls[0] > fail_after:
                handle.remove()
                error = torch.OutOfMemoryError if kind == "oom" else RuntimeError
                raise error(f"speedkit test fault: injected {kind} at UNet call {calls[0]}")

        handle = shared.sd_model.model.diffusion_model.register_forward_pre_hook(fail_at_call)
        p.speedkit_test_fault = handle

    def _probe(self, p):
        unet = shared.sd_model.model.diffusion_model

        def probe(_module, _args):
            handle.remove()
            forward = unet.__dict__.get("forward")
            p.extra_generation_params["Speedkit test probe"] = (
                f"Linear.forward={torch.nn.Linear.forward.__name__} unet.forward={type(forward).__name__}"
            )

        handle = unet.register_forward_pre_hook(probe)
        p.speedkit_test_fault = handle

    def postprocess(self, p, processed, *args):
        handle = getattr(p, "speedkit_test_fault", None)
        if handle is not None:
            handle.remove()
