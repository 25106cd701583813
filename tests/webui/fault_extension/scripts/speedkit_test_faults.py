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
                   channels-last have been applied;
  "cpu-graphs"     CUDA graphs played on the CPU for this generation (tests/graph_standins.py:
                   a capture freezes the call, a replay runs only the recording), so the whole
                   fast path runs in this CPU WebUI; the graphs stay cached between generations;
  "cpu-graphs-copy" the same, and a UNet module that copies from the CPU while a capture runs
                   (as sgm's timestep embedding did), so every capture fails;
  "cpu-graphs-copy-1" only captures of calls with a batch of 1 (without the negative prompt) fail;
  "cpu-compile"    CPU graphs, and a compiler that hands the forward back unchanged (inductor
                   needs a GPU) and counts what it was given ("Speedkit test compiled");
  "cpu-compile-fails" the same, with compiled forwards that fail as torch.compile fails;
  "cpu-compile-slow" the same, with a first call per shape that takes until 2 s after the user
                   interrupts (at most 32 s), reported in the progress text as the WebUI's compiler does;
  "vae-wrapped"    the VAE decoder's forward wrapped on the instance for the generation (a tiled VAE).
"""

import sys
from pathlib import Path

import gradio as gr
import torch
from modules import processing, script_callbacks, scripts, shared

NESTED_LORA = "<lora:speedkit-tiny:1>"
TESTS = Path(__file__).resolve().parents[3]
CPU_COPY_ERROR = "Cannot copy between CPU and CUDA tensors during CUDA graph capture unless the CPU tensor is pinned"


class CpuGraphs:
    """One CPU graph cache for the whole session, swapped in for a generation and out after."""

    cache = None

    @classmethod
    def swap_in(cls, p) -> None:
        from lib_speedkit.cuda_graph import GraphCache
        from lib_speedkit.webui import fast_path

        if str(TESTS) not in sys.path:
            sys.path.insert(0, str(TESTS))
        from graph_standins import StandInCapturer

        if cls.cache is None:
            cls.cache = GraphCache(StandInCapturer())
        p.speedkit_test_graphs = fast_path.GRAPHS
        fast_path.GRAPHS = cls.cache

    @staticmethod
    def swap_out(p) -> None:
        from lib_speedkit.webui import fast_path

        previous = getattr(p, "speedkit_test_graphs", None)
        if previous is not None:
            fast_path.GRAPHS = previous


class CpuCompiler:
    """A compiler for this generation (swapped in and out like the graphs)."""

    @staticmethod
    def swap_in(p, fails: bool = False, slow: bool = False) -> None:
        import torch._dynamo.exc

        from lib_speedkit.compiled import Compiler
        from lib_speedkit.webui import compiled

        given = []

        def compile_fn(forward):
            given.append(type(forward).__name__)
            if slow:
                return CpuCompiler.slow_first_call(forward)
            if not fails:
                return forward

            def broken(*_args, **_kwargs):
                raise torch._dynamo.exc.TorchDynamoException("speedkit test fault: inductor failed")

            return broken

        p.speedkit_test_compiler = (compiled.COMPILER, given)
        compiled.COMPILER = Compiler(compile_fn)
        if slow:
            compiled.COMPILER.announce, compiled.COMPILER.interrupted = compiled.announce, compiled.interrupted

    @staticmethod
    def slow_first_call(forward):
        """A compiled forward whose first call lasts until 2 s after the generation is interrupted
        (a compile goes on after the caller stopped waiting; it returns nothing to nobody)."""
        import time

        calls = []

        def compiled_forward(*args, **kwargs):
            if calls:
                return forward(*args, **kwargs)
            calls.append(1)
            deadline = time.monotonic() + 30
            while not shared.state.interrupted and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(2)
            return None

        return compiled_forward

    @staticmethod
    def swap_out(p) -> None:
        from lib_speedkit.webui import compiled

        previous = getattr(p, "speedkit_test_compiler", None)
        if previous is not None:
            compiled.COMPILER = previous[0]
            p.speedkit_test_compiler = None

    @staticmethod
    def record(p) -> None:
        """What was compiled so far, into the infotext (written before postprocess)."""
        previous = getattr(p, "speedkit_test_compiler", None)
        if previous is not None:
            p.extra_generation_params["Speedkit test compiled"] = ",".join(previous[1]) or "nothing"


def copy_from_cpu_while_capturing(p, batch: int | None = None) -> None:
    from lib_speedkit.webui import fast_path

    def hook(_module, args):
        if fast_path.GRAPHS.capturer.capturing() and batch in (None, args[0].shape[0]):
            raise RuntimeError(CPU_COPY_ERROR)

    p.speedkit_test_copy = shared.sd_model.model.diffusion_model.time_embed.register_forward_pre_hook(hook)


def _probe_text(unet) -> str:
    """What the fast path looks like from inside sampling: nn.Linear's forward, the UNet's
    instance forward, and the networks merged into the LoRA's layer (time_embed.0) right now."""
    forward = unet.__dict__.get("forward")
    merged = [name for name, *_ in getattr(unet.time_embed[0], "network_current_names", ())]
    return (
        f"Linear.forward={torch.nn.Linear.forward.__name__} unet.forward={type(forward).__name__} "
        f"networks={','.join(merged) or 'none'}"
    )


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
        if kind.startswith("cpu-compile"):
            CpuGraphs.swap_in(p)
            CpuCompiler.swap_in(p, fails=kind == "cpu-compile-fails", slow=kind == "cpu-compile-slow")
        if kind.startswith("cpu-graphs"):
            CpuGraphs.swap_in(p)
        if kind == "cpu-graphs-copy":
            copy_from_cpu_while_capturing(p)
        if kind == "cpu-graphs-copy-1":
            copy_from_cpu_while_capturing(p, batch=1)
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
        elif kind == "vae-wrapped":  # as a tiled VAE does: the decoder's forward wrapped for the generation
            decoder = shared.sd_model.first_stage_model.decoder
            own = decoder.forward
            decoder.forward = lambda z, **kwargs: own(z, **kwargs)
            p.speedkit_test_decoder = decoder

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

    def postprocess_batch(self, p, *args, **kwargs):
        CpuCompiler.record(p)

    def postprocess(self, p, processed, *args):
        for name in ("speedkit_test_fault", "speedkit_test_copy"):
            handle = getattr(p, name, None)
            if handle is not None:
                handle.remove()
        CpuGraphs.swap_out(p)
        CpuCompiler.swap_out(p)
        decoder = getattr(p, "speedkit_test_decoder", None)
        if decoder is not None:
            del decoder.__dict__["forward"]


class GlobalCpuCompile:
    """POST /speedkit-test/cpu-compile {"on": true}: CPU graphs and a pass-through compiler for every
    generation until {"on": false}, also those that run no scripts (the bench, precompile)."""

    previous = None

    @classmethod
    def switch(cls, on: bool) -> dict:
        from lib_speedkit.compiled import Compiler
        from lib_speedkit.webui import compiled, fast_path

        if on and cls.previous is None:
            holder = processing.StableDiffusionProcessing.__new__(processing.StableDiffusionProcessing)
            CpuGraphs.swap_in(holder)
            cls.previous = (holder, compiled.COMPILER)
            compiled.COMPILER = Compiler(lambda forward: forward)
        elif not on and cls.previous is not None:
            holder, compiler = cls.previous
            CpuGraphs.swap_out(holder)
            compiled.COMPILER = compiler
            cls.previous = None
        return {"on": cls.previous is not None, "graphs": type(fast_path.GRAPHS.capturer).__name__}


def _cpu_compile_route(body: dict) -> dict:
    return GlobalCpuCompile.switch(bool(body.get("on")))


def _add_test_routes(_demo, app) -> None:
    app.add_api_route("/speedkit-test/cpu-compile", _cpu_compile_route, methods=["POST"])


script_callbacks.on_app_started(_add_test_routes)
