"""The generator is the paper's attention residual U-Net."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import TINY_SIZES
from LDCTDenoiseLib.networks.hu2024 import (
    CBAM,
    ChannelAttention,
    Generator,
    GeneratorConfig,
    ResidualBlock,
    SpatialAttention,
    count_parameters,
)


def test_paper_generator_has_8_3_million_parameters_and_119_gflop_per_512_slice():
    generator = Generator().eval()
    assert 8.25e6 < count_parameters(generator) < 8.35e6
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        generator(torch.zeros(1, 1, 512, 512))
    assert counter.get_total_flops() == pytest.approx(119e9, rel=0.01)


def test_paper_widths_are_32_to_512_and_the_decoder_returns_to_the_skip_width():
    generator = Generator()
    assert [e.body[0].out_channels for e in generator.encoders] == [32, 64, 128, 256]
    assert generator.bottom.body[0].out_channels == 512
    assert [d.block.body[0].in_channels for d in generator.decoders] == [512 + 256, 256 + 128, 128 + 64, 64 + 32]
    assert [d.block.body[0].out_channels for d in generator.decoders] == [256, 128, 64, 32]
    assert all(isinstance(d.attention, CBAM) for d in generator.decoders)


def test_residual_block_shortcut_is_a_1x1_conv_with_batch_norm():
    block = ResidualBlock(3, 8)
    conv, norm = block.shortcut
    assert conv.kernel_size == (1, 1) and isinstance(norm, torch.nn.BatchNorm2d)
    x = torch.randn(2, 3, 10, 10)
    block.eval()
    expected = torch.relu(block.body(x) + norm(conv(x)))
    torch.testing.assert_close(block(x), expected)


def test_channel_attention_is_sigmoid_of_shared_fc_over_avg_and_max_pools():
    attention = ChannelAttention(8, reduction=2)
    f = torch.randn(3, 8, 5, 7)
    avg = f.mean(dim=(2, 3), keepdim=True)
    peak = f.amax(dim=(2, 3), keepdim=True)
    expected = torch.sigmoid(attention.fc(avg) + attention.fc(peak))
    torch.testing.assert_close(attention(f), expected)
    assert attention(f).shape == (3, 8, 1, 1)


def test_spatial_attention_is_sigmoid_of_7x7_conv_over_channel_mean_and_max():
    attention = SpatialAttention()
    assert attention.conv.kernel_size == (7, 7) and attention.conv.in_channels == 2
    f = torch.randn(2, 6, 9, 11)
    pooled = torch.cat([f.mean(1, keepdim=True), f.max(1, keepdim=True).values], dim=1)
    torch.testing.assert_close(attention(f), torch.sigmoid(attention.conv(pooled)))


def test_cbam_gates_channels_then_positions():
    cbam = CBAM(8, reduction=4)
    f = torch.randn(2, 8, 6, 6)
    gated = f * cbam.channel(f)
    torch.testing.assert_close(cbam(f), gated * cbam.spatial(gated))


def test_output_is_input_plus_a_3x3_conv_correction():
    generator = Generator(GeneratorConfig(**TINY_SIZES)).eval()
    assert generator.head.kernel_size == (3, 3)
    torch.nn.init.zeros_(generator.head.weight)
    torch.nn.init.zeros_(generator.head.bias)
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(generator(x), x)


@pytest.mark.parametrize("size", [(1, 1), (7, 13), (33, 64), (100, 51)])
def test_any_height_and_width_come_back_unchanged_in_shape(size):
    generator = Generator(GeneratorConfig(**TINY_SIZES)).eval()
    x = torch.rand(2, 1, *size)
    with torch.no_grad():
        assert generator(x).shape == x.shape


def test_padding_does_not_change_pixels_that_fit():
    """A size that is already a multiple of 2**depth is not padded at all."""
    generator = Generator(GeneratorConfig(**TINY_SIZES)).eval()
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(generator(x), x + generator.residual(x))


def test_width_and_depth_are_configurable():
    generator = Generator(GeneratorConfig(base_width=8, depth=3))
    assert len(generator.encoders) == 3 and generator.bottom.body[0].out_channels == 64
    assert generator.size_multiple == 8


def test_config_round_trips_and_rejects_unknown_settings():
    config = GeneratorConfig(base_width=16)
    assert GeneratorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown generator settings"):
        GeneratorConfig.from_dict({"widht": 3})
