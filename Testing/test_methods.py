"""The methods of the field as models: each network's shape and size, its loss, training, export and use by name."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from conftest import tiny_training_config
from LDCTDenoiseLib.errors import WeightsError
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.models.weights import find_model, installed_models, load_model, save_model
from LDCTDenoiseLib.networks import ARCHITECTURES, architecture
from LDCTDenoiseLib.networks.cyclegan import CycleGanConfig, ResnetGenerator
from LDCTDenoiseLib.networks.pix2pix import Pix2PixConfig, Pix2PixGenerator
from LDCTDenoiseLib.networks.structkpn import StructKPN, StructKpnConfig, local_convolution
from LDCTDenoiseLib.networks.unet import UNet, UNetConfig
from LDCTDenoiseLib.networks.wgan_vgg import WganVggConfig, WganVggGenerator
from training.config import load_config
from training.export import export_model
from training.losses import supervised_loss
from training.methods import METHODS
from training.methods.pix2pix.patchgan import FakePool, PatchGan
from training.methods.structkpn.loss import SIGMA_L1, SIGMA_L2, structure_aware_loss, structure_weights
from training.trainer import Trainer

TINY = {
    "attention-residual-unet": {"base_width": 4, "depth": 2, "cbam_reduction": 2},
    "wgan-vgg-cnn": {"width": 4, "layers": 3},
    "unet": {"base_width": 4, "depth": 2},
    "structkpn": {"width": 4, "blocks": 1, "kernel_size": 3},
    "cyclegan-resnet": {"base_width": 4, "blocks": 1, "residual": True},
    "pix2pix-unet": {"base_width": 4, "depth": 5, "residual": True},
}
METHOD = {"wgan-vgg-cnn": "wgan-vgg", "unet": "zhang-unet", "structkpn": "structkpn",
          "attention-residual-unet": "hu2024", "cyclegan-resnet": "cyclegan", "pix2pix-unet": "pix2pix"}
LOSS = {"wgan-vgg-cnn": "loss.mse=1.0", "unet": "loss.mse=1.0", "structkpn": "loss.structure_aware=1.0",
        "attention-residual-unet": "loss.l1=1.0", "cyclegan-resnet": "loss.cycle=20", "pix2pix-unet": "loss.l1=200"}
STAGE = {"cyclegan-resnet": "cyclegan", "pix2pix-unet": "pix2pix"}  # the rest: stage1


def conv(before: int, after: int, k: int = 3) -> int:
    return before * after * k * k + after


def test_every_registered_method_has_a_network_and_presets_that_load():
    for entry in METHODS.values():
        assert entry.architecture in ARCHITECTURES
        for preset in entry.presets:
            config = load_config(preset)
            assert config.method == entry.name and config.architecture == entry.architecture or preset == "finetune"


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_network_maps_odd_sizes_to_the_same_size(name):
    torch.manual_seed(0)
    network = architecture(name).build(TINY[name]).eval()
    x = torch.rand(2, 1, 37, 53)
    with torch.no_grad():
        y = network(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert network.residual(torch.rand(1, 1, 2 * network.size_multiple, network.size_multiple)).shape[-2:] == (
        2 * network.size_multiple, network.size_multiple)


def test_wgan_vgg_generator_is_yangs_eight_convolutions_of_32_channels():
    network = WganVggGenerator(WganVggConfig())
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and all(c.kernel_size == (3, 3) for c in convs)
    assert [c.out_channels for c in convs] == [32] * 7 + [1]
    assert sum(p.numel() for p in network.parameters()) == conv(1, 32) + 6 * conv(32, 32) + conv(32, 1) == 56_097


def test_unet_has_the_transfer_studys_24_convolutions_and_channels():
    network = UNet(UNetConfig())
    convs = [m for m in network.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convs) == 24
    contracting = [32, 32, 32, 64, 64, 128, 128, 256, 256, 512, 512]
    expansive = [256, 256, 256, 128, 128, 128, 64, 64, 64, 32, 32, 32]
    plain = [c for c in convs if isinstance(c, torch.nn.Conv2d)]
    assert [c.out_channels for c in plain[:11]] == contracting
    up_path = sorted((c for c in convs[11:]), key=lambda c: -c.out_channels)  # module order: all ups, then merges
    assert sorted(c.out_channels for c in up_path) == sorted(expansive + [1])
    assert sum(isinstance(c, torch.nn.ConvTranspose2d) and c.stride == (2, 2) for c in convs) == 4
    # the paper's layer table: 3x3 convs (contracting, expansive), 3x3 transposed convs up, a 1x1 conv out
    table = [conv(1, 32), conv(32, 32), conv(32, 32), conv(32, 64), conv(64, 64), conv(64, 128), conv(128, 128),
             conv(128, 256), conv(256, 256), conv(256, 512), conv(512, 512)]
    for width in (256, 128, 64, 32):
        table += [conv(2 * width, width), conv(2 * width, width), conv(width, width)]  # up, merge, conv
    table.append(conv(32, 1, k=1))
    assert sum(p.numel() for p in network.parameters()) == sum(table)


def test_the_local_convolution_is_the_explicit_per_pixel_kernel_sum():
    torch.manual_seed(1)
    image, kernels = torch.rand(2, 1, 6, 7), torch.rand(2, 9, 6, 7)
    padded = np.pad(image.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    expected = np.zeros(image.shape, dtype=np.float64)
    for n in range(2):
        for y in range(6):
            for x in range(7):
                for i in range(3):
                    for j in range(3):
                        expected[n, 0, y, x] += kernels[n, 3 * i + j, y, x] * padded[n, 0, y + i, x + j]
    np.testing.assert_allclose(local_convolution(image, kernels).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_structkpn_kernels_sum_to_one_so_a_flat_image_keeps_its_value():
    torch.manual_seed(2)
    network = StructKPN(StructKpnConfig(width=4, blocks=1, kernel_size=5)).eval()
    with torch.no_grad():
        kernels = network.kernels(torch.rand(1, 1, 20, 20))
        flat = network(torch.full((1, 1, 20, 20), 0.25))
    assert kernels.shape == (1, 25, 20, 20) and torch.allclose(kernels.sum(1), torch.ones(1, 20, 20), atol=1e-5)
    assert torch.allclose(flat, torch.full_like(flat, 0.25), atol=1e-6)


def _brute_force_weights(image: np.ndarray, patch: int = 11) -> tuple[np.ndarray, ...]:
    """Structure tensor summed over each 11x11 patch by explicit loops, eigenvalues by numpy."""
    height, width = image.shape
    padded = np.pad(image, 1, mode="edge")
    gx = (padded[1:-1, 2:] - padded[1:-1, :-2]) / 2
    gy = (padded[2:, 1:-1] - padded[:-2, 1:-1]) / 2
    r = patch // 2
    gxp, gyp = np.pad(gx, r, mode="edge"), np.pad(gy, r, mode="edge")
    strength, coherence = np.zeros(image.shape), np.zeros(image.shape)
    for y in range(height):
        for x in range(width):
            a, b = gxp[y:y + patch, x:x + patch].ravel(), gyp[y:y + patch, x:x + patch].ravel()
            tensor = np.array([[a @ a, a @ b], [a @ b, b @ b]]) / patch**2
            small, large = np.linalg.eigvalsh(tensor)
            strength[y, x] = math.sqrt(max(small + large, 0))
            coherence[y, x] = (large - small) / (large + small + 1e-12)
    body = image > (-700 + 1024) / 4096
    values = np.sort(strength[body])
    reference = values[(values.size - 1) // 2]  # the lower median (torch's)
    w_l2 = np.exp(-((strength / reference) ** 2) / (2 * SIGMA_L2**2))
    w_l1 = (1 - w_l2) * (1 - np.exp(-(coherence**2) / (2 * SIGMA_L1**2)))
    return w_l2, 1 - w_l2 - w_l1, w_l1


def test_structure_aware_weights_equal_a_brute_force_computation():
    rng = np.random.default_rng(3)
    image = np.full((24, 26), (40 + 1024) / 4096) + rng.normal(0, 10 / 4096, (24, 26))
    image[:, 13:] += 300 / 4096  # a vertical edge: coherent, strong
    image[:4] = 0.0  # air above the body
    weights = structure_weights(torch.tensor(image, dtype=torch.float64)[None, None])
    for got, wanted in zip(weights, _brute_force_weights(image)):
        np.testing.assert_allclose(got[0, 0].numpy(), wanted, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sum(w[0, 0].numpy() for w in weights), 1.0)


def test_structure_aware_weights_send_flat_tissue_to_l2_edges_to_l1_and_texture_to_ssim():
    rng = np.random.default_rng(4)
    image = np.full((64, 96), (40 + 1024) / 4096) + rng.normal(0, 10 / 4096, (64, 96))
    image[:, 70:] += 300 / 4096  # a straight edge
    image[20:44, 8:32] += rng.normal(0, 200 / 4096, (24, 24))  # strong texture without a direction
    w_l2, w_ssim, w_l1 = (w[0, 0].numpy() for w in structure_weights(torch.tensor(image)[None, None]))
    assert w_l2[32, 50] > 0.8 and w_l1[32, 70] > 0.8 and w_ssim[32, 20] > 0.8


def test_structure_aware_loss_is_zero_for_a_perfect_output_and_grows_with_the_error():
    target = torch.rand(1, 1, 32, 32) * 0.1 + 0.25
    assert float(structure_aware_loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    small = structure_aware_loss(target + 0.001 * torch.randn_like(target), target)
    large = structure_aware_loss(target + 0.01 * torch.randn_like(target), target)
    assert 0 < float(small) < float(large)


def test_the_supervised_loss_adds_mse_and_the_structure_aware_term_by_weight():
    from training.config import LossConfig

    output, target = torch.rand(1, 1, 24, 24), torch.rand(1, 1, 24, 24)
    terms = supervised_loss(output, target, LossConfig(l1=0, ssim=0, perceptual=0, mse=2.0, structure_aware=3.0), None)
    assert set(terms) == {"mse", "structure_aware", "loss"}
    assert float(terms["loss"]) == pytest.approx(2 * float(terms["mse"]) + 3 * float(terms["structure_aware"]))


def _tiny(dataset, cache, name: str, *overrides: str):
    return tiny_training_config(dataset, cache, f"method={METHOD[name]}", f"architecture={name}",
                                f"stage={STAGE.get(name, 'stage1')}",
                                f"model={json.dumps(TINY[name])}",
                                "loss.l1=0", "loss.ssim=0", "loss.perceptual=0", LOSS[name], "schedule.validate=false",
                                "optim.lr=3e-3", *overrides)


@pytest.mark.parametrize("name", ["wgan-vgg-cnn", "unet", "structkpn"])
def test_a_few_steps_lower_each_methods_loss_on_a_fixed_batch(phantom_dataset, tmp_path, name):
    trainer = Trainer(_tiny(phantom_dataset, tmp_path / "cache", name), tmp_path / "run", quiet=True)
    batch = next(trainer._batches())
    losses = [trainer.step_kind.run(trainer, [batch])["loss"] for _ in range(6)]
    assert losses[-1] < losses[0]


def test_wgan_vgg_trains_as_a_wgan_with_the_supervised_term_beside_the_adversarial_one(phantom_dataset, tmp_path):
    config = _tiny(phantom_dataset, tmp_path / "cache", "wgan-vgg-cnn", "stage=gan", "loss.mse=0",
                   "loss.perceptual=0.1", "optim.critic_lr=1e-3", "optim.critic_steps=2")
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    iterator = trainer._batches()
    batches = [next(iterator) for _ in range(config.optim.critic_steps)]
    terms = [trainer.step_kind.run(trainer, batches) for _ in range(4)]
    assert trainer.c_optimizer.param_groups[0]["lr"] == 1e-3 and trainer.g_optimizer.param_groups[0]["lr"] == 3e-3
    assert {"perceptual", "adversarial", "critic", "gp"} <= set(terms[0])
    assert terms[-1]["critic"] < terms[0]["critic"]
    assert terms[0]["generator"] == pytest.approx(terms[0]["adversarial"] + 0.1 * terms[0]["perceptual"], rel=1e-5)


@pytest.mark.parametrize("name", ["wgan-vgg-cnn", "unet", "structkpn", "cyclegan-resnet", "pix2pix-unet"])
def test_export_load_and_denoise_by_name_round_trip(phantom_dataset, tmp_path, model_cache, capsys, name):
    from LDCTDenoiseLib.cli import main

    config = _tiny(phantom_dataset, tmp_path / "cache", name, "schedule.epochs=1")
    Trainer(config, tmp_path / "run", quiet=True).train()
    folder = model_cache / "models" / f"my-{name}"
    export_model(tmp_path / "run", folder, half=True, name=f"my-{name}")
    loaded = load_model(folder)
    assert loaded.manifest["architecture"] == name and loaded.manifest["provenance"]["method_name"] == config.method
    assert type(loaded.generator) is architecture(name).network_type
    assert f"my-{name}" in {model.name for model in installed_models()}
    from LDCTDenoiseLib.io import read_volume, write_volume
    from LDCTDenoiseLib.simulation import make_phantom

    write_volume(make_phantom((2, 40, 40), seed=5), tmp_path / "in.nrrd")
    assert main(["denoise", str(tmp_path / "in.nrrd"), str(tmp_path / "out.nrrd"), "--model", f"my-{name}",
                 "--device", "cpu", "--quiet"]) == 0
    out = read_volume(tmp_path / "out.nrrd")
    assert out.array.shape == (2, 40, 40) and out.metadata["header"]["LDCTDenoise_model"] == f"my-{name}"
    assert f"my-{name} ({METHOD[name]}, {STAGE.get(name, 'stage1')}" in capsys.readouterr().out


def test_installed_models_lists_each_folder_once_with_its_one_line_summary(tmp_path, model_cache):
    for name, folder in (("wgan", model_cache / "models" / "wgan"), ("broken", model_cache / "models" / "broken")):
        save_model(architecture("wgan-vgg-cnn").build(TINY["wgan-vgg-cnn"]), folder, Normalization(), {}, name=name,
                   summary="an 8-layer CNN for tests" if name == "wgan" else "")
    (model_cache / "models" / "broken" / "manifest.json").write_text("{not json")
    listed = {model.name: model for model in installed_models()}
    assert "wgan" in listed and "broken" not in listed  # beside the checkout's bundled models
    assert listed["wgan"].summary == "an 8-layer CNN for tests" and listed["wgan"].architecture == "wgan-vgg-cnn"


def test_a_name_that_is_not_installed_lists_the_installed_ones(model_cache):
    with pytest.raises(WeightsError, match="no installed model named 'nope'"):
        find_model("nope")


def test_a_manifest_naming_an_unknown_architecture_is_refused_with_the_known_ones(tiny_model_dir):
    manifest = json.loads((tiny_model_dir / "manifest.json").read_text())
    manifest["architecture"] = "red-cnn"
    (tiny_model_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="unknown architecture 'red-cnn'.*wgan-vgg-cnn"):
        load_model(tiny_model_dir)


def test_a_manifest_config_that_does_not_fit_its_architecture_is_refused(tmp_path):
    folder = tmp_path / "m"
    save_model(architecture("unet").build(TINY["unet"]), folder, Normalization(), {})
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["config"]["residual"] = "yes"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="residual must be true or false"):
        load_model(folder)


def test_finetune_retrains_an_installed_model_on_a_few_slices_and_exports_the_best_state(
        phantom_dataset, tmp_path, model_cache):
    from training.cli import main

    source = model_cache / "models" / "small-unet"
    torch.manual_seed(0)
    save_model(architecture("unet").build(TINY["unet"]), source, Normalization(), {"purpose": "tests"})
    run = tmp_path / "ft"
    tiny = ["data.crop=32", "data.workers=0", "data.simulation_workers=1", "noise.kind=gaussian",
            f"data.cache={tmp_path / 'cache'}", "schedule.epochs=6", "schedule.batch=2", "schedule.epoch_samples=4",
            "schedule.early_stop_patience=2", "validation.crop=32", "validation.max_slices=2", "optim.lr=1e-3"]
    argv = ["finetune", "--model", "small-unet", "--data", str(phantom_dataset), "--fraction", "0.5",
            "--holdout", "0.5", "--out", str(run), "--quiet"]
    assert main(argv + [item for pair in zip(["--set"] * len(tiny), tiny) for item in pair]) == 0
    rows = list(csv.DictReader((run / "data" / "dataset.csv").open()))
    assert {row["split"] for row in rows} == {"train", "validation"} and len(rows) == 6  # three series, two parts
    validations = list(csv.DictReader((run / "validation.csv").open()))
    best = max(validations, key=lambda row: float(row["output_psnr_soft"]))
    exported = load_model(run / "model")
    provenance = exported.manifest["provenance"]
    assert provenance["steps"] == int(best["step"]) and provenance["finetune"]["train_slices"] == 3 * 1
    assert provenance["finetuned_from"]["name"] == "small-unet" and exported.manifest["architecture"] == "unet"
    assert str(tmp_path) not in (run / "model" / "manifest.json").read_text()  # no folder of this machine
    stale = [float(row["output_psnr_soft"]) for row in validations if int(row["step"]) > int(best["step"])]
    assert validations[0]["step"] == "0"  # the model it started from is scored first: never exported worse
    assert len(validations) == 1 + 6 or len(stale) == 2  # ran to the end, or stopped after two stale validations


def test_finetune_refuses_single_slice_series_with_the_reason(tmp_path, model_cache):
    from LDCTDenoiseLib.io import write_volume
    from LDCTDenoiseLib.simulation import make_phantom
    from training.finetune import finetune

    (tmp_path / "data" / "p").mkdir(parents=True)
    write_volume(make_phantom((1, 32, 32), seed=1), tmp_path / "data" / "p" / "ndct.nrrd")
    save_model(architecture("unet").build(TINY["unet"]), model_cache / "models" / "u", Normalization(), {})
    with pytest.raises(Exception, match="needs at least two per series"):
        finetune("u", tmp_path / "data", tmp_path / "run")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_cyclegan_generator_is_the_reference_resnet_with_nine_blocks():
    rgb = ResnetGenerator(CycleGanConfig(in_channels=3))  # as its reference implementation prints it: 11.378 M
    assert _count(rgb) == 11_378_179
    network = ResnetGenerator(CycleGanConfig())
    blocks = [m for m in network.body if type(m).__name__ == "ResidualBlock"]
    assert len(blocks) == 9 and all(b.body[1].out_channels == 256 for b in blocks)
    assert _count(network) == 11_378_179 - 2 * conv(2, 64, 7) + 2 * 64 - 2  # one channel in and out, not three


def test_pix2pix_generator_is_the_reference_unet_256():
    assert _count(Pix2PixGenerator(Pix2PixConfig(in_channels=3))) == 54_413_955  # printed: 54.414 M
    network = Pix2PixGenerator(Pix2PixConfig())
    downs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(downs) == 8 and all(d.stride == (2, 2) and d.kernel_size == (4, 4) for d in downs)
    assert [d.out_channels for d in downs] == [64, 128, 256, 512, 512, 512, 512, 512]
    assert sum(isinstance(m, torch.nn.Dropout) for m in network.modules()) == 3
    assert network.size_multiple == 256


@pytest.mark.parametrize("name", ["cyclegan-resnet", "pix2pix-unet"])
def test_a_generator_that_learns_the_correction_starts_as_the_identity(name):
    torch.manual_seed(0)
    network, x = architecture(name).build(TINY[name]), torch.rand(2, 1, 64, 64)
    assert torch.equal(network(x), x)
    image = architecture(name).build({**TINY[name], "residual": False})  # the papers' tanh image instead
    assert not torch.allclose(image(x), x, atol=1e-3)


def test_patchgan_is_the_70_pixel_discriminator_of_the_reference_implementation():
    assert _count(PatchGan(3, norm="instance")) == 2_764_737  # CycleGAN's D: 2.765 M
    assert _count(PatchGan(6, norm="batch")) == 2_768_705  # Pix2Pix's D on (input, image): 2.769 M
    assert PatchGan(1)(torch.rand(2, 1, 70, 70)).shape == (2, 1, 6, 6)


def test_the_fake_pool_mixes_stored_fakes_into_a_full_batch_and_keeps_its_size():
    pool = FakePool(4, torch.Generator().manual_seed(0))
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool(first), first) and len(pool.images) == 4  # filling: passed through
    later = pool(torch.full((64, 1, 1, 1), 9.0))
    stored = sum(float(v) < 4 for v in later.flatten())
    assert 0 < stored <= 4 and len(pool.images) == 4  # some earlier fakes came back, the pool stayed at 4
    assert torch.equal(FakePool(0, torch.Generator())(first), first)


def test_pix2pix_steps_train_the_discriminator_then_the_generator_with_gan_plus_l1(phantom_dataset, tmp_path):
    paper = json.dumps({**TINY["pix2pix-unet"], "residual": False})  # the tanh image: L1 starts large, then falls
    config = _tiny(phantom_dataset, tmp_path / "cache", "pix2pix-unet", f"model={paper}")
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    assert isinstance(trainer.critic, PatchGan) and trainer.critic.model[0].in_channels == 2
    batch = next(trainer._batches())
    terms = [trainer.step_kind.run(trainer, [batch]) for _ in range(6)]
    assert {"adversarial", "l1", "d_real", "d_fake"} <= set(terms[0])
    assert terms[0]["generator"] == pytest.approx(terms[0]["adversarial"] + 200 * terms[0]["l1"], rel=1e-5)
    assert terms[-1]["l1"] < terms[0]["l1"]


def test_cyclegan_trains_two_generators_and_two_discriminators_without_comparing_pairs(phantom_dataset, tmp_path):
    paper = json.dumps({**TINY["cyclegan-resnet"], "residual": False})  # tanh images: the cycle term starts large
    config = _tiny(phantom_dataset, tmp_path / "cache", "cyclegan-resnet", f"model={paper}", "loss.identity=10",
                   "optim.fake_pool=4")
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    assert type(trainer.inverse) is ResnetGenerator and isinstance(trainer.critic_x, PatchGan)
    batch = next(trainer._batches())
    before = [p.detach().clone() for p in trainer.inverse.parameters()]
    terms = [trainer.step_kind.run(trainer, [batch]) for _ in range(6)]
    assert {"adversarial", "cycle", "identity", "d_x", "d_y"} <= set(terms[0])
    assert terms[0]["generator"] == pytest.approx(
        terms[0]["adversarial"] + 20 * terms[0]["cycle"] + 10 * terms[0]["identity"], rel=1e-5)
    assert terms[-1]["cycle"] < terms[0]["cycle"]
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.inverse.parameters()))
    # a shuffled target changes nothing that pairs would: the losses see x and y only through G, F, D
    shuffled = {**batch, "target": batch["target"].flip(0)}
    assert set(trainer.step_kind.run(trainer, [shuffled])) == set(terms[0])


@pytest.mark.parametrize("name", ["cyclegan-resnet", "pix2pix-unet"])
def test_pix2pix_and_cyclegan_runs_resume_bit_for_bit(phantom_dataset, tmp_path, name):
    from training.checkpoint import list_checkpoints, load_checkpoint

    overrides = ("schedule.validate=false", "schedule.checkpoint_every=2", "schedule.keep_checkpoints=0",
                 "optim.fake_pool=3")
    Trainer(_tiny(phantom_dataset, tmp_path / "cache", name, *overrides), tmp_path / "whole", quiet=True).train()
    Trainer(_tiny(phantom_dataset, tmp_path / "cache", name, *overrides, "schedule.epochs=1"), tmp_path / "parts",
            quiet=True).train()
    halfway = list_checkpoints(tmp_path / "parts")[-1]
    Trainer(_tiny(phantom_dataset, tmp_path / "cache", name, *overrides), tmp_path / "parts", resume=halfway,
            quiet=True).train()
    whole, resumed = (load_checkpoint(list_checkpoints(tmp_path / run)[-1]) for run in ("whole", "parts"))
    assert whole["step"] == resumed["step"] == 4
    networks = ("generator", "critic", "inverse", "critic_x") if name == "cyclegan-resnet" else ("generator", "critic")
    for key in networks:
        for parameter, value in whole[key].items():
            assert torch.equal(value, resumed[key][parameter]), (key, parameter)


def test_the_model_card_is_drafted_from_the_manifest_with_the_exported_steps_validation(phantom_dataset, tmp_path):
    from training.cli import main

    config = _tiny(phantom_dataset, tmp_path / "cache", "structkpn", "schedule.epochs=2", "schedule.validate=true",
                   "validation.crop=32", "validation.max_slices=1")
    Trainer(config, tmp_path / "run", quiet=True).train()
    export_model(tmp_path / "run" / "best.pt", tmp_path / "model", name="kpn")
    validations = {row["step"]: row for row in csv.DictReader((tmp_path / "run" / "validation.csv").open())}
    recorded = load_model(tmp_path / "model").manifest["provenance"]["validation"]
    best_step = str(load_model(tmp_path / "model").manifest["provenance"]["steps"])
    assert recorded["output_psnr_soft"] == pytest.approx(float(validations[best_step]["output_psnr_soft"]))
    assert main(["card", str(tmp_path / "model"), "--good", "flat tissue", "--bad", "edges"]) == 0
    card = (tmp_path / "model" / "MODEL_CARD.md").read_text()
    parameters = sum(p.numel() for p in architecture("structkpn").build(TINY["structkpn"]).parameters())
    assert f"{parameters:,} parameters" in card and f"{recorded['output_psnr_soft']:.2f} dB" in card
    assert "Good at: flat tissue" in card and "Bad at: edges" in card and f"{best_step} steps" in card


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_network_runs_on_onnx_runtime_as_on_torch(model_cache, name):
    from LDCTDenoiseLib.engine import onnx_runtime
    from LDCTDenoiseLib.engine.inference import EngineOptions, VolumeDenoiser
    from LDCTDenoiseLib.models.weights import LoadedModel
    from LDCTDenoiseLib.simulation import make_phantom

    if not onnx_runtime.available():
        pytest.skip("onnxruntime and onnx are not installed")
    torch.manual_seed(0)  # Pix2Pix and CycleGAN in their tanh form: a zero-initialised correction would pass trivially
    model = LoadedModel(architecture(name).build({**TINY[name], "residual": False} if name in STAGE else TINY[name])
                        .eval(), Normalization(), manifest={}, name=name)
    hu = make_phantom((2, 64, 64)).array[:, :45, :51]
    runs = {runtime: VolumeDenoiser(model, EngineOptions(device="cpu", compile="off", runtime=runtime))
            for runtime in ("onnxruntime", "torch")}
    outputs = {runtime: denoiser(hu) for runtime, denoiser in runs.items()}
    assert runs["onnxruntime"].last_run["runtime"] == "onnxruntime"
    np.testing.assert_allclose(outputs["onnxruntime"], outputs["torch"], atol=0.05)  # HU


def test_a_model_folder_is_installed_into_the_cache_and_then_loads_by_name(tmp_path, model_cache, capsys):
    from LDCTDenoiseLib.cli import main

    folder = tmp_path / "study" / "kpn-study"
    save_model(architecture("structkpn").build(TINY["structkpn"]), folder, Normalization(), {}, name="kpn-study")
    (folder / "MODEL_CARD.md").write_text("# Model card\n")
    assert main(["models", "--install", str(folder), "--as", "kpn", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["installed"] == str(model_cache / "models" / "kpn")
    assert find_model("kpn").manifest["architecture"] == "structkpn"
    assert (model_cache / "models" / "kpn" / "MODEL_CARD.md").is_file()
    assert main(["models", "--install", str(folder), "--as", "kpn"]) != 0  # never overwritten
    assert "already installed" in capsys.readouterr().err


def test_a_model_that_fails_its_checksum_is_not_installed(tmp_path, model_cache, capsys):
    from LDCTDenoiseLib.cli import main

    folder = tmp_path / "bad"
    save_model(architecture("structkpn").build(TINY["structkpn"]), folder, Normalization(), {})
    weights = folder / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    assert main(["models", "--install", str(folder)]) != 0
    assert "checksum mismatch" in capsys.readouterr().err
    assert not (model_cache / "models").exists()  # nothing copied, not even a staging folder
