"""Guidance cutoff policies and the reference CFG denoiser that really halves the batch."""

import math

import pytest
import torch

from lib_speedkit.guidance import CutoffCFGDenoiser, CutoffPolicy
from lib_speedkit.plan import GuidanceCutoffConfig
from lib_speedkit.sampling import EpsDenoiser, discrete_sigmas, sample_euler, sd_training_sigmas
from tiny_models import LATENT_SIZE, prompt_pair

STEPS = 28


def skipped_steps(config: GuidanceCutoffConfig, steps: int = STEPS) -> list[int]:
    policy = CutoffPolicy(config)
    sigmas = discrete_sigmas(steps)
    return [i for i in range(steps) if not policy.run_uncond(i, steps, float(sigmas[i]))]


def test_sd_schedule_matches_the_published_sd1_sigma_range():
    sigmas = sd_training_sigmas()
    assert float(sigmas[0]) == pytest.approx(0.0292, abs=1e-4)
    assert float(sigmas[-1]) == pytest.approx(14.6146, abs=1e-4)
    euler_28 = discrete_sigmas(STEPS)
    assert len(euler_28) == STEPS + 1 and float(euler_28[-1]) == 0.0
    assert float(euler_28[18]) == pytest.approx(0.9324, abs=1e-4)


def test_off_never_skips():
    assert skipped_steps(GuidanceCutoffConfig()) == []


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (1.0, list(range(18, 28))),  # sigma 0.9324 at step 18 is the first below 1.0
        (3.0, list(range(9, 28))),
        (0.02, []),
        (20.0, list(range(28))),
    ],
)
def test_sigma_cutoff_skips_every_step_below_the_threshold(threshold, expected):
    """Unlike the WebUI's default NGMS rule, which skips only every other such step."""
    assert skipped_steps(GuidanceCutoffConfig("sigma", threshold)) == expected


@pytest.mark.parametrize(
    ("fraction", "steps", "expected"),
    [
        (0.5, 28, list(range(14, 28))),
        (0.75, 28, list(range(21, 28))),
        (1.0, 28, []),
        (0.0, 28, list(range(28))),
        (0.7, 10, [7, 8, 9]),  # 0.7 * 10 is 7.000000000000001 in floats
        (0.1, 28, list(range(3, 28))),
    ],
)
def test_fraction_cutoff_skips_steps_from_fraction_times_total(fraction, steps, expected):
    assert skipped_steps(GuidanceCutoffConfig("fraction", fraction), steps) == expected


def test_adaptive_skips_once_any_similarity_reached_tau():
    policy = CutoffPolicy(GuidanceCutoffConfig("adaptive", 0.99))
    assert policy.run_uncond(3, STEPS, 1.0, [0.2, 0.9, 0.98])
    assert not policy.run_uncond(4, STEPS, 1.0, [0.2, 0.995, 0.5])


class ScriptedSimilarityModel(torch.nn.Module):
    """A denoiser whose cond and uncond noise predictions have a scripted cosine similarity."""

    def __init__(self, similarities):
        super().__init__()
        self.similarities = list(similarities)
        self.batch_sizes: list[int] = []

    def forward(self, x, sigma, cond):
        self.batch_sizes.append(x.shape[0])
        eps = torch.zeros_like(x)
        eps.view(x.shape[0], -1)[:, 0] = 1.0
        guided_call = x.shape[0] == 2  # batch 1: cond row, then uncond row
        if guided_call:
            s = self.similarities[len(self.batch_sizes) - 1]
            eps.view(2, -1)[1, 0] = s
            eps.view(2, -1)[1, 1] = math.sqrt(1 - s * s)
        return x - eps


def test_adaptive_stops_after_the_first_step_whose_similarity_reaches_tau():
    model = ScriptedSimilarityModel([0.5, 0.8, 0.97, 0.999, 0.1, 0.1])
    denoiser = CutoffCFGDenoiser(model, CutoffPolicy(GuidanceCutoffConfig("adaptive", 0.99)))
    denoiser.begin(8)
    x = torch.zeros(1, 4, 2, 2)
    cond, uncond = torch.zeros(1, 3, 5), torch.ones(1, 3, 5)
    for _ in range(8):
        denoiser(x, torch.ones(1), cond, uncond, 7.0)
    assert denoiser.similarities == pytest.approx([0.5, 0.8, 0.97, 0.999])
    assert model.batch_sizes == [2, 2, 2, 2, 1, 1, 1, 1]
    assert (denoiser.counters.with_uncond, denoiser.counters.without_uncond) == (4, 4)


def _record_batches(unet):
    sizes = []
    unet.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    return sizes


@pytest.mark.parametrize("batch", [1, 2])
def test_reference_cfg_denoiser_halves_the_unet_batch_after_the_cutoff(unet, batch):
    sizes = _record_batches(unet)
    denoiser = CutoffCFGDenoiser(EpsDenoiser(unet), CutoffPolicy(GuidanceCutoffConfig("fraction", 0.5)))
    cond, uncond = prompt_pair(batch)
    sigmas = discrete_sigmas(STEPS)
    denoiser.begin(STEPS)
    x = torch.randn(batch, 4, LATENT_SIZE, LATENT_SIZE) * sigmas[0]
    out = sample_euler(denoiser, x, sigmas, {"cond": cond, "uncond": uncond, "cond_scale": 12.0})
    assert sizes == [2 * batch] * 14 + [batch] * 14
    assert (denoiser.counters.with_uncond, denoiser.counters.without_uncond) == (14, 14)
    assert torch.isfinite(out).all()


def test_cfg_combines_like_classifier_free_guidance_and_skipped_steps_are_pure_cond(unet):
    inner = EpsDenoiser(unet)
    cond, uncond = prompt_pair(1)
    x = torch.randn(1, 4, LATENT_SIZE, LATENT_SIZE)
    sigma = torch.tensor([2.5])
    with torch.no_grad():
        d_cond = inner(x, sigma, cond=cond)
        d_uncond = inner(x, sigma, cond=uncond)
        guided = CutoffCFGDenoiser(inner)(x, sigma, cond, uncond, 12.0)
        skip_all = CutoffPolicy(GuidanceCutoffConfig("sigma", 3.0))
        skipped = CutoffCFGDenoiser(inner, skip_all)(x, sigma, cond, uncond, 12.0)
    # cond and uncond ran as one batch of 2 in the denoiser, separately here: fp32 rounding only
    torch.testing.assert_close(guided, d_uncond + (d_cond - d_uncond) * 12.0, rtol=1e-4, atol=1e-4)
    assert torch.equal(skipped, d_cond)


def test_adaptive_on_a_real_unet_records_a_similarity_per_guided_step(unet):
    denoiser = CutoffCFGDenoiser(EpsDenoiser(unet), CutoffPolicy(GuidanceCutoffConfig("adaptive", 1.0)))
    cond, uncond = prompt_pair(1)
    sigmas = discrete_sigmas(6)
    denoiser.begin(6)
    sample_euler(
        denoiser,
        torch.randn(1, 4, LATENT_SIZE, LATENT_SIZE) * sigmas[0],
        sigmas,
        {"cond": cond, "uncond": uncond, "cond_scale": 7.0},
    )
    assert len(denoiser.similarities) == 6
    assert all(-1.0 <= s <= 1.0 for s in denoiser.similarities)
