import pytest
import torch

from lib_speedkit.snapshot import ModuleSnapshot
from tiny_models import tiny_unet


@pytest.fixture(scope="session")
def _pristine_unet():
    return tiny_unet()


@pytest.fixture
def unet(_pristine_unet):
    """A tiny real ldm UNet, re-randomised; each test gets its own copy."""
    import copy

    return copy.deepcopy(_pristine_unet)


@pytest.fixture
def assert_clean():
    """assert_clean(unet, snapshot): the UNet is exactly as in the snapshot."""

    def check(model: torch.nn.Module, before: ModuleSnapshot) -> None:
        problems = before.diff(ModuleSnapshot.capture(model))
        assert problems == [], problems

    return check


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
