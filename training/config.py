"""Training configuration: typed sections, YAML presets with ``base:`` inheritance, dotted overrides.

Paths in a YAML file are relative to that file; paths given with ``--set`` are relative to
the current folder. Unknown keys are errors that list the known ones, so a typo never
silently trains with a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.networks import DEFAULT_ARCHITECTURE, architecture

METHOD_PRESETS = Path(__file__).resolve().parent / "methods"  # <method>/presets/*.yaml
PATH_KEYS = {("data", "dataset"), ("data", "cache"), ("loss", "vgg_weights"), ("init_from",)}
STAGES = ("stage1", "stage2", "gan", "pix2pix", "cyclegan")  # what each trains on: TrainConfig.stage
UNALIGNED_STAGES = ("stage2", "cyclegan")  # trained on unaligned LDCT/NDCT pairs (real ones where a dataset has them)


@dataclass
class DataConfig:
    dataset: str | None = None  # manifest (.csv/.yaml) or dataset folder
    cache: str | None = None  # decoded series; default: the user cache folder
    validation: float | int = 0.1  # patients (count) or fraction, unless the manifest fixes splits
    test: float | int = 0.28  # the paper: 18 of 64
    split_seed: int = 0
    crop: int = 128
    min_tissue_fraction: float = 0.1  # crops with fewer pixels above -700 HU are drawn again
    workers: int = 2  # DataLoader workers
    flips: bool = False  # random left-right flip of each crop pair
    rot90: bool = False  # random 90-degree rotations (streaks of every direction)
    pixel_scale: list[float] = field(default_factory=list)  # [low, high]: crops resampled to pixel x f
    simulation_workers: int = 2  # processes for projection-domain simulation
    simulation_device: str = "cpu"  # where scanner noise is simulated: cpu, or cuda (workers then spawn)
    starvation_boost: float = 0.0  # slices drawn (1 + boost x their photon-starvation share) as often (sampling)
    noise_bank: int = 0  # scanner noise: whole-slice realisations per slice simulated ahead (noise_bank); 0: per crop


@dataclass
class NoiseConfig:
    kind: str = "gaussian"  # stage-1 input: gaussian | projection | scanner (randomised, drawn per crop)
    scanner: dict = field(default_factory=dict)  # ScannerRanges overrides, e.g. {added_noise_hu: [5, 150]}
    reference_noise_hu: list[float] = field(default_factory=list)  # scanner: [low, high] noise added to the target too
    real_texture: float = 0.0  # scanner: share of crops whose noise is mixed with training series' own (real_noise)
    gaussian_std_hu: list[float] = field(default_factory=lambda: [25.0, 25.0])  # drawn uniformly per crop
    spatially_varying: bool = False  # Gaussian std modulated by a smooth random field (x0.5..x1.5)
    dose_fractions: list[float] = field(default_factory=lambda: [0.25])  # projection noise
    photons_per_ray: float = 1.2e6
    electronic_std: float = 10.0
    views: int = 360
    seed: int = 0


@dataclass
class LossConfig:
    l1: float = 1.0
    ssim: float = 2.0
    perceptual: float = 1.0  # 0 disables the VGG-19 term explicitly
    mse: float = 0.0  # mean squared error (normalised units), the U-Net's and the *-MSE ablations' loss
    adversarial: float = 1.0  # stage gan: weight of -E[D(G(z))] beside the supervised terms
    structure_aware: float = 0.0  # StructKPN: L2 / SSIM / L1 weighted per pixel by the target's structure
    vgg_weights: str | None = None  # vgg19-dcbb9e9d.pth; None: search the usual places; "random": tests only
    vgg_layers: int = 35  # torchvision features[:35], up to conv5_4 (Yang et al.)
    gradient_penalty: float = 10.0
    structure: float = 0.0  # stage 2, off by default: L1 of low-pass(G(LDCT)) vs low-pass(LDCT)
    structure_sigma_px: float = 3.0
    cycle: float = 0.0  # cyclegan: weight of the cycle-consistency L1 (both directions)
    identity: float = 0.0  # cyclegan: weight of the identity L1, G(NDCT) = NDCT and F(LDCT) = LDCT


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    lr_gamma: float = 0.7
    lr_step_epochs: int = 40
    critic_lr: float | None = None  # default: lr
    critic_betas: list[float] = field(default_factory=list)  # default: betas
    critic_steps: int = 3  # critic updates per generator update (stage 2)
    fake_pool: int = 0  # cyclegan: earlier fakes the discriminators also see (50 in the paper)
    freeze_batch_norm: bool = False  # fine-tuning on small batches: the generator's BN keeps init_from's statistics


@dataclass
class ScheduleConfig:
    epochs: int = 200
    batch: int = 16  # global batch; divided among DDP processes
    epoch_samples: int = 3200  # crops per epoch
    checkpoint_every: int = 500  # steps
    keep_checkpoints: int = 3
    log_every: int = 10
    validate: bool = True
    max_minutes: float = 0.0  # stop (with a checkpoint) after this much training wall time; 0 = no limit
    early_stop_patience: int = 0  # stop after this many validations without a better soft-tissue PSNR; 0 = never


@dataclass
class Stage2Config:
    max_slice_offset: int = 1  # slices between the LDCT and NDCT of a simulated pair
    rotation_deg: float = 2.0
    shift_px: float = 3.0
    elastic_px: float = 2.0
    elastic_grid: int = 4


@dataclass
class ValidationConfig:
    max_slices: int = 8
    crop: int = 256  # central crop of each slice; 0 = whole slice
    dose_fraction: float = 0.25
    seed: int = 1000
    scanner: dict = field(default_factory=dict)  # ScannerNoise of the validation LDCT when noise.kind is scanner


@dataclass
class TrainConfig:
    name: str = "run"
    method: str = "hu2024"  # training.methods: whose recipe this is (recorded in the exported manifest)
    # stage1: supervised, aligned pairs; stage2: WGAN-GP, unaligned pairs; gan: WGAN-GP + supervised, aligned pairs;
    # pix2pix: conditional PatchGAN + L1, aligned pairs; cyclegan: two generators and PatchGANs, unaligned pairs
    stage: str = "stage1"
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # auto (bf16/fp16 on CUDA, off on CPU) | off | bf16 | fp16
    channels_last: bool = False  # networks and batches in NHWC (oneDNN's faster layout on CPUs: benchmarks/training.py)
    init_from: str | None = None  # generator weights to start from: a run folder, checkpoint or exported model
    architecture: str = DEFAULT_ARCHITECTURE  # LDCTDenoiseLib.networks
    model: dict = field(default_factory=dict)  # the architecture's settings; missing ones take its defaults
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def network_config(self):
        """The validated config of ``architecture`` from ``model`` (an InputError names the problem)."""
        try:
            return architecture(self.architecture).config(self.model)
        except ValueError as error:
            raise InputError(f"model ({self.architecture}): {error}") from None

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.schedule.epoch_samples // self.schedule.batch)

    @property
    def total_steps(self) -> int:
        return self.schedule.epochs * self.steps_per_epoch


def preset_path(name_or_path: str | Path) -> Path:
    """A YAML file path, or the name of a bundled preset (``paper-stage1``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    for bundled in METHOD_PRESETS.glob(f"*/presets/{name_or_path}.yaml"):
        if bundled.is_file():
            return bundled
    names = ", ".join(sorted(p.stem for p in METHOD_PRESETS.glob("*/presets/*.yaml")))
    raise InputError(f"no config file {path} and no bundled preset of that name (presets: {names})")


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A preset or YAML file, with ``key.sub=value`` overrides applied on top."""
    path = preset_path(name_or_path)
    values = _read_yaml(path)
    values.setdefault("name", path.stem)
    for override in overrides:
        key, _, raw = override.partition("=")
        if not _ or not key:
            raise InputError(f"override {override!r}: write it as section.key=value, e.g. schedule.epochs=10")
        value = yaml.safe_load(raw)
        if tuple(key.split(".")) in PATH_KEYS and value is not None:
            value = str(Path(value).expanduser().resolve())
        _set(values, key.split("."), value)
    config = _build(TrainConfig, values, "")
    config.network_config  # noqa: B018 - validated here, so a bad model section fails before any work
    return config


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _read_yaml(path: Path) -> dict:
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise InputError(f"{path}: a config file is a YAML mapping")
    for keys in PATH_KEYS:
        parent = values
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent.get(key), dict) else {}
        if parent.get(keys[-1]) not in (None, "random"):
            parent[keys[-1]] = str((path.parent / Path(parent[keys[-1]]).expanduser()).resolve())
    base = values.pop("base", None)
    if base is None:
        return values
    merged = _read_yaml(path.parent / base)
    merged.pop("name", None)
    for key, value in values.items():
        _merge(merged, [key], value)
    return merged


def _merge(values: dict, keys: list[str], value: Any) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _merge(values, keys + [key], inner)
    else:
        _set(values, keys, value)


def _set(values: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        values = values.setdefault(key, {})
    values[keys[-1]] = value


def _build(cls: type, values: dict, where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise InputError(f"unknown config key {where}{sorted(unknown)[0]}; known keys here: {', '.join(known)}")
    kwargs = {}
    for name, value in values.items():
        default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise InputError(f"config key {where}{name} is a section; give a mapping of its keys")
            kwargs[name] = _build(type(default), value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, known[name].type, f"{where}{name}")
    return cls(**kwargs)


def _coerce(value: Any, annotation: str, key: str) -> Any:
    """YAML reads ``1e-4`` (no dot) as text and ``off`` as false: each is made what the field wants."""
    if isinstance(value, bool) and str(annotation).startswith("str"):
        return "on" if value else "off"
    if isinstance(value, str) and "float" in str(annotation):
        try:
            return float(value)
        except ValueError:
            raise InputError(f"config key {key} wants a number; got {value!r}") from None
    return value
