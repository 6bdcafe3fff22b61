"""The training loop of every method and stage: data, optimisation, checkpoints, exact resume, logs, validation.

What one step does is its method's (``training.methods.<name>.step``, found by stage through
``training.methods.training_step``): stage 1 one supervised update, stage 2 and ``gan`` WGAN-GP with
``critic_steps`` critic batches a step, ``pix2pix`` and ``cyclegan`` their adversarial steps.
An epoch is ``epoch_samples / batch`` steps; learning rates decay every ``lr_step_epochs`` epochs.
"""

from __future__ import annotations

import csv
import itertools
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from LDCTDenoiseLib.atomic import atomic_file
from LDCTDenoiseLib.engine.inference import resolve_device, resolve_precision
from LDCTDenoiseLib.errors import Cancelled, InputError
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.networks import Architecture, architecture
from LDCTDenoiseLib.networks.base import train_with_frozen_batch_norm
from LDCTDenoiseLib.simulation.scanner import FILTERS

from . import distributed
from .checkpoint import generator_state, list_checkpoints, load_checkpoint, save_checkpoint
from .config import STAGES, UNALIGNED_STAGES, TrainConfig, save_config
from .data import Patient, dataset_split
from .methods import method, training_step
from .noise_bank import BankCrops, config_bank
from .real_noise import TextureMix, textures
from .sampling import SAMPLE_FIELDS, CropSpec, Stage1Crops, Stage2Pairs, StepBatches
from .validation import Validator
from .vgg import load_perceptual
from .volumes import SeriesCache, training_volumes

BEST = "best.pt"  # the run's best validated state


class Trainer:
    """One run of stage 1 or stage 2 in folder ``run`` (config.yaml, log.csv, checkpoints/)."""

    def __init__(
        self, config: TrainConfig, run: str | Path, resume: str | Path | None = None, quiet: bool = False
    ) -> None:
        if config.stage not in STAGES:
            raise InputError(f"stage must be one of {STAGES}; got {config.stage!r}")
        method(config.method)
        self.step_kind = training_step(config.stage)
        if config.data.dataset is None:
            raise InputError("no dataset: set data.dataset in the config or pass --set data.dataset=PATH")
        self.config, self.run, self.quiet = config, Path(run), quiet
        self.device = resolve_device(config.device)
        self.processes = distributed.start(self.device)
        if self.device.type == "cuda" and self.processes.enabled:
            self.device = torch.device("cuda", self.processes.local_rank)
        self.normalization = Normalization()
        self.amp_dtype = _amp_dtype(config.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self._build_models()
        self.tensorboard = None
        self.step, self.seconds = 0, 0.0  # seconds: training wall time over all sessions of the run
        self.best = {"step": 0, "psnr_soft": float("-inf"), "stale": 0}  # validation's best, for early stopping
        if resume is not None:
            self._restore(load_checkpoint(resume))
        self.patients = self._split()
        self.cache = SeriesCache(config.data.cache, config.data.simulation_workers, quiet or not self.processes.is_main)
        self.validator = (
            Validator(config, self.patients["validation"], self.cache, self.normalization)
            if config.schedule.validate and self.processes.is_main and self.patients["validation"]
            else None
        )

    def train(self) -> Path | None:
        """Run to the configured number of steps; returns the last checkpoint (None on other processes)."""
        config = self.config
        if self.processes.is_main:
            self.run.mkdir(parents=True, exist_ok=True)
            save_config(config, self.run / "config.yaml")
            self.tensorboard = _tensorboard(self.run)
        batches = self._batches()
        bar = tqdm(total=config.total_steps, initial=self.step, desc=config.stage, unit="step",
                   disable=self.quiet or not self.processes.is_main, dynamic_ncols=True)
        first_step, session_start = self.step, time.perf_counter()
        if self.step == 0 and config.init_from and self.validator is not None:
            self._validate()  # the model it continues from: the baseline, and the best state until beaten
        try:
            while self.step < config.total_steps and not self._out_of_time(session_start) and not self._stale():
                started = time.perf_counter()
                terms = self._train_step(batches)
                self.step += 1
                seconds = time.perf_counter() - started
                self.seconds += seconds
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()})
                self._after_step(terms, seconds)
        except KeyboardInterrupt as interrupt:
            saved = self._save()
            message = f"training stopped at step {self.step}; resume with --resume {saved or self.run}"
            raise Cancelled(message) from interrupt
        finally:
            bar.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
        if self.step == first_step or self.step % config.schedule.checkpoint_every:
            self._save()  # the end of the run is always checkpointed
        distributed.stop(self.processes)
        return list_checkpoints(self.run)[-1] if self.processes.is_main else None

    def _training_mode(self) -> None:
        """Train mode; with ``optim.freeze_batch_norm`` the batch norms stay in eval mode.

        Batches of two 256-pixel crops give batch statistics unlike a whole slice's, and running
        statistics that drift with the last few batches (a mean-HU bias at inference). Frozen, the
        network trains as it will infer, on the statistics of the model it continues; the norms'
        scales and shifts still learn.
        """
        if self.config.optim.freeze_batch_norm:
            train_with_frozen_batch_norm(self.generator)
        else:
            self.generator.train()
        if self.inverse is not None:
            self.inverse.train()

    def _out_of_time(self, session_start: float) -> bool:
        """True once this session has trained ``schedule.max_minutes`` (a bounded GPU lease, say)."""
        limit = self.config.schedule.max_minutes
        return limit > 0 and time.perf_counter() - session_start >= 60 * limit

    # --- one step -------------------------------------------------------------------------------

    def _train_step(self, batches: Iterator[dict]) -> dict[str, float]:
        count = self.step_kind.batches(self.config)
        return self.step_kind.run(self, [self._laid_out(next(batches)) for _ in range(count)])

    def _laid_out(self, batch: dict) -> dict:
        if not self.config.channels_last:
            return batch
        return {key: value.contiguous(memory_format=torch.channels_last) if value.dim() == 4 else value
                for key, value in batch.items()}

    def update(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # --- bookkeeping after a step ---------------------------------------------------------------

    def _after_step(self, terms: dict[str, float], seconds: float) -> None:
        schedule = self.config.schedule
        end_of_epoch = self.step % self.config.steps_per_epoch == 0
        if end_of_epoch:
            for scheduler in self.schedulers:
                scheduler.step()
        if self.processes.is_main and (self.step % schedule.log_every == 0 or end_of_epoch):
            self._log(
                "log.csv",
                {
                    "step": self.step,
                    "epoch": self.step / self.config.steps_per_epoch,
                    "lr": self.g_optimizer.param_groups[0]["lr"],
                    "seconds_per_step": seconds,
                    **terms,
                },
            )
        if end_of_epoch and self.validator is not None:
            self._validate()
        if self.step % schedule.checkpoint_every == 0:
            self._save()

    def _validate(self) -> None:
        scores = self.validator(distributed.unwrap(self.generator))
        self._log("validation.csv", {"step": self.step, **scores})
        self._track_best(scores["output_psnr_soft"])
        self._training_mode()

    def _track_best(self, psnr_soft: float) -> None:
        """Keep the best validated state as ``best.pt`` (what ``finetune`` exports) and count stale validations."""
        if psnr_soft > self.best["psnr_soft"]:
            self.best = {"step": self.step, "psnr_soft": psnr_soft, "stale": 0}
            with atomic_file(self.run / BEST) as tmp:
                torch.save(self._state(), tmp)
        else:
            self.best["stale"] += 1

    def _stale(self) -> bool:
        patience = self.config.schedule.early_stop_patience
        return patience > 0 and self.best["stale"] >= patience

    def record_samples(self, params: torch.Tensor) -> None:
        """samples.csv: the noise recipe each crop of this step drew (scanner noise)."""
        path = self.run / "samples.csv"
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", *SAMPLE_FIELDS])
            for row in params.tolist():
                named = dict(zip(SAMPLE_FIELDS, row, strict=True))
                named["filter"] = FILTERS[int(named["filter"])]
                writer.writerow([self.step + 1, *(named[f] for f in SAMPLE_FIELDS)])

    def _log(self, name: str, row: dict) -> None:
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step":
                    self.tensorboard.add_scalar(f"{name.removesuffix('.csv')}/{key}", value, row["step"])
        path = self.run / name
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _save(self) -> Path | None:
        """Checkpoint on the main process; every process waits so none runs ahead of a save."""
        path = None
        if self.processes.is_main:
            path = save_checkpoint(self._state(), self.run, self.config.schedule.keep_checkpoints)
        self.processes.barrier()
        return path

    def _state(self) -> dict:
        state = {
            "format": "ldctdenoise-checkpoint/1",
            "stage": self.config.stage,
            "step": self.step,
            "seconds": self.seconds,
            "config": self.config.to_dict(),
            "normalization": self.normalization.to_dict(),
            "generator": distributed.unwrap(self.generator).state_dict(),
            "g_optimizer": self.g_optimizer.state_dict(),
            "schedulers": [s.state_dict() for s in self.schedulers],
            "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "epsilon": self.epsilon_rng.get_state()},
            "best": dict(self.best),
        }
        if self.critic is not None:
            state["critic"] = distributed.unwrap(self.critic).state_dict()
            state["c_optimizer"] = self.c_optimizer.state_dict()
        if self.inverse is not None:  # cyclegan: F (NDCT to LDCT), D_X and the pools of fakes
            state["inverse"] = distributed.unwrap(self.inverse).state_dict()
            state["critic_x"] = distributed.unwrap(self.critic_x).state_dict()
            state["pools"] = [pool.state() for pool in self.pools]
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore(self, state: dict) -> None:
        if state.get("stage") != self.config.stage:
            raise InputError(f"{state['path']} is a {state.get('stage')} checkpoint; this run is {self.config.stage}")
        distributed.unwrap(self.generator).load_state_dict(state["generator"])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        self.scaler.load_state_dict(state["scaler"])
        if self.critic is not None:
            distributed.unwrap(self.critic).load_state_dict(state["critic"])
            self.c_optimizer.load_state_dict(state["c_optimizer"])
        if self.inverse is not None:
            distributed.unwrap(self.inverse).load_state_dict(state["inverse"])
            distributed.unwrap(self.critic_x).load_state_dict(state["critic_x"])
            for pool, images in zip(self.pools, state["pools"], strict=True):
                pool.load(images, self.device)
        torch.set_rng_state(state["rng"]["torch"])
        self.epsilon_rng.set_state(state["rng"]["epsilon"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.step, self.seconds = int(state["step"]), float(state.get("seconds", 0.0))
        self.best = dict(state.get("best", self.best))

    # --- construction ---------------------------------------------------------------------------

    def _build_models(self) -> None:
        config = self.config
        torch.manual_seed(config.seed)  # the same initial weights on every process
        entry = architecture(config.architecture)
        generator = entry.build(config.network_config)
        if config.init_from:
            state, model_config, source_architecture = generator_state(config.init_from)
            if source_architecture != entry.name or entry.config(model_config) != config.network_config:
                raise InputError(
                    f"init_from is a {source_architecture} with config {model_config}; this run's model is a "
                    f"{entry.name} with {config.network_config.to_dict()} (set architecture and model.* to match)"
                )
            generator.load_state_dict(state)
        self.epsilon_rng = torch.Generator().manual_seed(config.seed * 1000 + self.processes.rank)
        self.generator = self.wrap(generator)
        self._build_adversaries(entry)
        self._training_mode()
        self._build_optimizers()
        self.features = None
        if config.loss.perceptual > 0 and config.stage not in UNALIGNED_STAGES:
            self.features = load_perceptual(config.loss.vgg_weights, config.loss.vgg_layers).to(self.device)

    def _build_adversaries(self, entry: Architecture) -> None:
        """The stage's critic or discriminator (and what else its method trains against), set by its step."""
        self.inverse, self.critic, self.critic_x = None, None, None
        if self.step_kind.adversaries is not None:
            self.step_kind.adversaries(self, entry)

    def _build_optimizers(self) -> None:
        """Adam over the generators, and over the critics if any; one step-decay schedule each."""
        optim = self.config.optim
        generators = [m for m in (self.generator, self.inverse) if m is not None]
        self.g_optimizer = torch.optim.Adam(itertools.chain(*(m.parameters() for m in generators)), lr=optim.lr,
                                            betas=tuple(optim.betas))
        optimizers, self.c_optimizer = [self.g_optimizer], None
        if self.critic is not None:
            critics = [m for m in (self.critic, self.critic_x) if m is not None]
            self.c_optimizer = torch.optim.Adam(itertools.chain(*(m.parameters() for m in critics)),
                                                lr=optim.critic_lr or optim.lr,
                                                betas=tuple(optim.critic_betas or optim.betas))
            optimizers.append(self.c_optimizer)
        self.schedulers = [torch.optim.lr_scheduler.StepLR(o, optim.lr_step_epochs, optim.lr_gamma) for o in optimizers]

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        layout = torch.channels_last if self.config.channels_last else torch.contiguous_format
        return distributed.wrap(module.to(self.device, memory_format=layout), self.processes, self.device)

    def _split(self) -> dict[str, list[Patient]]:
        return dataset_split(self.config.data)

    def _batches(self) -> Iterator[dict]:
        config = self.config
        if not self.processes.is_main:
            self.processes.barrier()  # the main process decodes and simulates into the cache first
        volumes = training_volumes(config, self.patients["train"], self.cache)
        if self.processes.is_main:
            self.processes.barrier()
        crops = CropSpec(config.data.crop, config.seed, self.normalization, config.data.min_tissue_fraction,
                         config.data.starvation_boost)
        banked = self._bank_crops(volumes)
        if config.stage in UNALIGNED_STAGES:
            dataset = Stage2Pairs(volumes, crops, config.stage2, config.noise, config.data)
        else:
            dataset = Stage1Crops(volumes, crops, config.noise, config.data, banked, self._texture(volumes))
        per_step = self.step_kind.batches(config)
        sampler = StepBatches(
            config.schedule.batch,
            self.step * per_step,
            config.total_steps * per_step,
            self.processes.rank,
            self.processes.world_size,
        )
        simulates_on_gpu = config.data.simulation_device != "cpu" and config.data.workers > 0
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=config.data.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            multiprocessing_context="spawn" if simulates_on_gpu else None,  # CUDA cannot cross a fork
        )
        return iter(loader)


    def _bank_crops(self, volumes: list) -> BankCrops | None:
        """With ``data.noise_bank``: crops cut from the training volumes' bank, built here (main process)."""
        bank = config_bank(self.config, volumes, self.cache.folder)
        if bank is None:
            return None
        if self.processes.is_main:
            bank.build(self.config.data.simulation_workers, self.quiet)
        self.processes.barrier()
        return BankCrops(bank, self.config.data.crop, tuple(self.config.noise.reference_noise_hu), self.config.data)


    def _texture(self, volumes: list) -> TextureMix | None:
        """With ``noise.real_texture``: the training volumes' own noise textures, mixed into that share of crops."""
        probability = self.config.noise.real_texture
        if not probability:
            return None
        if self.config.noise.kind != "scanner":
            raise InputError("noise.real_texture mixes into scanner noise: set noise.kind=scanner or real_texture=0")
        notes: list[str] = []
        found = textures(volumes, notes)
        if self.processes.is_main and not self.quiet:
            for note in notes:
                print(f"ldct-train: {note}")
            print(f"ldct-train: real-noise textures of {', '.join(t.name for t in found) or 'no series'}")
        return TextureMix(found, probability)


def _tensorboard(run: Path):
    """A TensorBoard writer beside the CSV logs when the tensorboard package is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run / "tensorboard"))


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: the inference engine's choice on CUDA when ``auto``; none on other devices."""
    if amp not in ("auto", "off", "bf16", "fp16"):
        raise InputError(f"amp must be auto, off, bf16 or fp16; got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    return resolve_precision(amp, device)
