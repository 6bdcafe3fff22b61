"""Losses, the critic and the VGG-19 feature extractor of the training subpackage."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from LDCTDenoiseLib.errors import WeightsError
from training.config import LossConfig
from training.losses import supervised_loss
from training.methods.hu2024.loss import structure_loss
from training.methods.wgan_vgg.critic import Critic
from training.methods.wgan_vgg.loss import critic_loss, gradient_penalty
from training.ssim import ssim_loss
from training.vgg import VGG19_FILE, load_perceptual, vgg19_features


def test_ssim_loss_is_one_minus_scikit_image_ssim():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 1, (40, 48))
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
    oracle = structural_similarity(noisy, clean, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False)
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)[None, None]  # noqa: E731
    assert float(ssim_loss(as_tensor(noisy), as_tensor(clean))) == pytest.approx(1 - oracle, abs=1e-5)


def test_supervised_loss_weights_l1_ssim_and_perceptual_as_the_paper():
    torch.manual_seed(0)
    output, target = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    features = load_perceptual("random", layers=4)
    terms = supervised_loss(output, target, LossConfig(), features)
    expected = terms["l1"] + 2 * terms["ssim"] + terms["perceptual"]
    assert float(terms["loss"]) == pytest.approx(float(expected))
    assert float(terms["l1"]) == pytest.approx(float((output - target).abs().mean()))
    assert float(terms["perceptual"]) > 0
    without = supervised_loss(output, target, LossConfig(perceptual=0.0), features)
    assert "perceptual" not in without


class Linear(torch.nn.Module):
    """D(x) = <w, x>: its gradient is w everywhere, so the penalty is (||w|| - 1)^2 by hand."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1)


class Square(torch.nn.Module):
    """D(x) = sum(x^2): gradient 2 x_hat, a penalty that depends on the mixing point."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x**2).flatten(1).sum(1)


def test_gradient_penalty_of_a_linear_critic_equals_the_hand_computed_value():
    w = torch.full((1, 2, 2), 0.25)  # ||w|| = 0.5 -> penalty (0.5 - 1)^2 = 0.25
    real, fake = torch.rand(3, 1, 2, 2), torch.rand(3, 1, 2, 2)
    penalty = gradient_penalty(Linear(w), real, fake, torch.rand(3, 1, 1, 1))
    assert float(penalty.detach()) == pytest.approx(0.25)


def test_gradient_penalty_of_a_quadratic_critic_equals_the_hand_computed_value():
    real = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    fake = torch.tensor([[[[0.0, 0.0], [0.0, 3.0]]]])
    epsilon = torch.tensor([[[[0.5]]]])
    # x_hat = (0.5, 0, 0, 1.5); grad = 2 x_hat = (1, 0, 0, 3); ||grad|| = sqrt(10)
    expected = (np.sqrt(10.0) - 1.0) ** 2
    assert float(gradient_penalty(Square(), real, fake, epsilon).detach()) == pytest.approx(expected)


def test_critic_loss_is_the_wgan_gp_objective():
    torch.manual_seed(0)
    critic = Critic(crop=16)
    real, fake, epsilon = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16), torch.rand(4, 1, 1, 1)
    terms = critic_loss(critic, real, fake, epsilon, penalty_weight=10.0)
    penalty = gradient_penalty(critic, real, fake, epsilon)
    expected = -critic(real).mean() + critic(fake).mean() + 10.0 * penalty
    assert float(terms["critic"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert float(terms["gp"]) == pytest.approx(float(penalty.detach()), rel=1e-5)


def test_critic_follows_yang_et_al():
    critic = Critic(crop=128)
    convs = [m for m in critic.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2] and all(c.kernel_size == (3, 3) for c in convs)
    linears = [m for m in critic.modules() if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(256 * 16 * 16, 1024), (1024, 1)]
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Sigmoid)) for m in critic.modules())
    assert critic(torch.rand(2, 1, 128, 128)).shape == (2,)
    with pytest.raises(ValueError, match="multiple of 8"):
        Critic(crop=60)


def test_structure_term_ignores_noise_and_sees_anatomy():
    torch.manual_seed(0)
    source = torch.zeros(1, 1, 64, 64)
    source[..., 16:48, 16:48] = 1.0
    denoised_noise = source + 0.2 * torch.randn_like(source)  # same anatomy, other noise
    moved = torch.roll(source, 6, dims=-1)  # anatomy changed
    assert float(structure_loss(denoised_noise, source, 3.0)) < 0.3 * float(structure_loss(moved, source, 3.0))


def test_vgg_layout_matches_torchvision_names():
    keys = list(vgg19_features().state_dict())
    assert len(keys) == 32 and keys[0] == "0.weight" and keys[-1] == "34.bias"


def _write_vgg(path, prefix="features."):
    state = {f"{prefix}{k}": v for k, v in vgg19_features().state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(state, path)
    return state


def test_vgg_weights_load_from_a_torchvision_style_file(tmp_path):
    path = tmp_path / "vgg19-local.pth"
    state = _write_vgg(path)
    features = load_perceptual(path, layers=35)
    assert torch.equal(features.features[34].weight, state["features.34.weight"])
    assert not any(p.requires_grad for p in features.parameters())


def test_vgg_file_with_a_wrong_hash_in_its_name_is_refused(tmp_path):
    path = tmp_path / "vgg19-00000000.pth"
    _write_vgg(path)
    assert not hashlib.sha256(path.read_bytes()).hexdigest().startswith("00000000")
    with pytest.raises(WeightsError, match="checksum"):
        load_perceptual(path, layers=35)


def test_a_file_that_is_not_vgg19_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="not a torchvision VGG-19"):
        load_perceptual(path, layers=35)


def test_missing_vgg_weights_say_where_to_put_the_file_and_how_to_opt_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("LDCTDENOISE_VGG19", raising=False)
    with pytest.raises(WeightsError) as error:
        load_perceptual(None, layers=35)
    message = str(error.value)
    assert VGG19_FILE in message and "loss.perceptual=0" in message and str(tmp_path / "torch") in message
