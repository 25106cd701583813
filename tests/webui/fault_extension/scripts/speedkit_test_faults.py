"""Test-only WebUI extension (tier 2 links it in; users never install it).

API args: [fail_after_unet_calls (-1 = never), kind]. Kinds:
  "error" / "oom"  the UNet raises a RuntimeError / torch.OutOfMemoryError after N calls, so the
                   tests can prove that Speedkit restores everything when sampling fails;
  "probe"          at the first UNet call, what Speedkit's pass-level switches look like from
                   inside sampling ("Speedkit test probe": nn.Linear's forward, the UNet's
                   instance forward);
  "options"        the host options Speedkit must never write while sampling, as opts.data holds
                   them before sampling ("Speedkit test options before") and at every UNet call
                   ("Speedkit test options": the distinct values seen);
  "nested"         after each image, a generation inside this one, as ADetailer runs it (the
                   same scripts and args, a LoRA in its prompt); its probe goes into
                   "Speedkit test nested";
  "tome-fails"     Speedkit's ToMe applier raises for this generation, after attention and
                   channels-last have been applied.
"""

import gradio as gr
import torch
from modules import processing, scripts, shared

NESTED_LORA = "<lora:speedkit-tiny:1>"


def _probe_text(unet) -> str:
    forward = unet.__dict__.get("forward")
    return f"Linear.forward={torch.nn.Linear.forward.__name__} unet.forward={type(forward).__name__}"


def _options_text() -> str:
    """The options Speedkit must never write while sampling, as opts.data holds them (None: unset)."""
    data = shared.opts.data
    return f"skip_early_cond={data.get('skip_early_cond')} s_min_uncond_all={data.get('s_min_uncond_all')}"


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

    def before_process(self, p, fail_after, kind):
        if kind == "tome-fails" and not getattr(p, "speedkit_test_inner", False):
            import lib_speedkit.appliers as appliers

            original = appliers.apply_tome

            def failing_tome(unet, config):
                appliers.apply_tome = original  # once: postprocess does not run for a failed generation
                raise RuntimeError("speedkit test fault: ToMe could not be applied")

            appliers.apply_tome = failing_tome

    def process(self, p, fail_after, kind):
        unet = shared.sd_model.model.diffusion_model
        if kind == "probe":
            self._hook(p, unet, lambda: p.extra_generation_params.__setitem__("Speedkit test probe", _probe_text(unet)))
        elif kind == "options":
            seen = set()
            p.extra_generation_params["Speedkit test options before"] = _options_text()

            def record():
                seen.add(_options_text())
                p.extra_generation_params["Speedkit test options"] = "; ".join(sorted(seen))

            self._hook(p, unet, record, once=False)
        elif kind in ("error", "oom") and fail_after is not None and fail_after >= 0:
            self._fail_after(p, unet, int(fail_after), kind)

    def _hook(self, p, unet, action, once=True):
        def hook(_module, _args):
            if once:
                handle.remove()
            action()

        handle = unet.register_forward_pre_hook(hook)
        p.speedkit_test_fault = handle

    def _fail_after(self, p, unet, fail_after, kind):
        calls = [0]

        def fail_at_call(_module, _args):
            calls[0] += 1
            if calls[0] > fail_after:
                handle.remove()
                error = torch.OutOfMemoryError if kind == "oom" else RuntimeError
                raise error(f"speedkit test fault: injected {kind} at UNet call {calls[0]}")

        handle = unet.register_forward_pre_hook(fail_at_call)
        p.speedkit_test_fault = handle

    def postprocess_image(self, p, pp, fail_after, kind):
        if kind != "nested" or getattr(p, "speedkit_test_inner", False):
            return
        inner = processing.StableDiffusionProcessingTxt2Img(
            sd_model=shared.sd_model,
            prompt=f"{p.prompt} {NESTED_LORA}",
            negative_prompt=p.negative_prompt,
            steps=2,
            width=p.width,
            height=p.height,
            seed=1,
            sampler_name="Euler",
            do_not_save_samples=True,
            do_not_save_grid=True,
        )
        inner.scripts = p.scripts  # as ADetailer: the same scripts and their args
        inner.script_args = p.script_args
        inner.speedkit_test_inner = True
        unet = shared.sd_model.model.diffusion_model
        seen = []
        handle = unet.register_forward_pre_hook(lambda _m, _a: seen.append(_probe_text(unet)) if not seen else None)
        try:
            processing.process_images(inner)
        finally:
            handle.remove()
        previous = p.extra_generation_params.get("Speedkit test nested")
        p.extra_generation_params["Speedkit test nested"] = "; ".join(filter(None, [previous, seen[0]]))

    def postprocess(self, p, processed, *args):
        handle = getattr(p, "speedkit_test_fault", None)
        if handle is not None:
            handle.remove()
