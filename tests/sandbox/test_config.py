"""The sandbox's settings from the environment, and the picture sizes it draws."""

from __future__ import annotations

import pytest

from sandbox.config import ProviderConfig, SandboxConfig
from sandbox.images import size_for_aspect


def test_the_environment_sets_every_provider_and_the_picture_size():
    config = SandboxConfig.from_env(
        {"GENQ_SANDBOX_LATENCY": "2.0", "GENQ_SANDBOX_RPM": "30", "GENQ_SANDBOX_IMAGE_SIDE": "256", "HOME": "/x"}
    )

    assert config.provider("gencraft") == ProviderConfig(latency_mean=2.0, rpm=30)
    assert config.provider("qtpixel").latency_mean == 2.0
    assert config.image_long_side == 256


def test_the_environment_sets_the_rates_of_server_errors_and_gateway_pages():
    config = SandboxConfig.from_env({"GENQ_SANDBOX_ERROR_RATE": "0.1", "GENQ_SANDBOX_GATEWAY_RATE": "0.05"})

    assert (config.provider("cloudsway").error_rate, config.provider("talecraft").gateway_rate) == (0.1, 0.05)


def test_an_empty_environment_is_a_fast_perfect_farm():
    config = SandboxConfig.from_env({})

    assert config == SandboxConfig()
    assert config.provider("gencraft") == ProviderConfig(
        latency_mean=0, failure_rate=0, error_rate=0, gateway_rate=0, rpm=None, credits=None
    )


@pytest.mark.parametrize(
    ("aspect", "long_side", "size"),
    [("1:1", 1024, (1024, 1024)), ("16:9", 1024, (1024, 576)), ("9:16", 2048, (1152, 2048)),
     ("21:9", 1024, (1024, 439)), ("3:2", 4096, (4096, 2731)), ("4:3", 64, (64, 48))],
)  # fmt: skip
def test_a_size_keeps_the_aspect_on_the_long_side(aspect: str, long_side: int, size: tuple[int, int]):
    assert size_for_aspect(aspect, long_side) == size
