"""Every setting of a denoising run, as one type that every front end hands to the engine.

The command line, the Slicer panel, the console API, the background process and its worker all
build one ``EngineOptions``; it is validated once, when it is made, in the engine's units
(strength a fraction 0..1; percent only at the ``--strength`` flag and the panel's slider). The
command line and the worker declare their flags with the same ``add_engine_arguments``, and an
options value crosses the process boundary as ``to_argv()`` / ``from_argv()``, so a new setting is
one field here plus its use in the engine. Imports neither torch nor numpy: the Slicer module
checks settings before torch is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from ..errors import InputError

DEVICES_HELP = "auto (CUDA, MPS, CPU), cpu, cuda, cuda:N, mps"
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # what a menu offers; cuda:N is accepted too
# mixed: the generator's full-resolution levels in fp32, the inner ones in bf16 (OpenVINO on a CPU with native bf16)
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "mixed")
COMPILE_MODES = ("auto", "on", "off")
# auto on the CPU: OpenVINO mixed where the CPU has native bf16, else ONNX Runtime fp32, else torch
RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
SELF_ENSEMBLE_SIZES = (1, 2, 4, 8)
KERNELS = ("auto", "smooth", "standard", "sharp")  # auto, and the kinds of engine.kernel.KEEP_FACTOR
MAX_KEEP_NOISE_HU = 100.0  # a normal-dose scan's own noise is 8-25 HU; more than this is a typo
MAX_ADAPT_MINUTES = 240.0


def _flag(flag: str, help_text: str, percent: bool = False, **argparse_options) -> dict:
    """A field's command-line form: its flag, help, argparse options, and whether the flag is in percent."""
    return {"flag": flag, "help": help_text, "percent": percent, "argparse": argparse_options}


@dataclass(frozen=True)
class EngineOptions:
    device: str = field(default="auto", metadata=_flag("--device", DEVICES_HELP))
    precision: str = field(default="auto", metadata=_flag(
        "--precision", "auto: bf16/fp16 on GPU; on CPU mixed (OpenVINO: fp32 at full resolution, bf16 inside) where "
        "the CPU has native bf16, else fp32", choices=PRECISIONS))
    batch_size: int | None = field(default=None, metadata=_flag(
        "--batch-size", "slices per batch (default: from free GPU memory; 1 on CPU)", type=int))
    compile: str = field(default="auto", metadata=_flag(
        "--compile", "torch.compile (auto: on CPU for volumes of >= 100 slices when neither OpenVINO nor ONNX "
        "Runtime can run)", choices=COMPILE_MODES))
    channels_last: bool = field(default=True, metadata=_flag(
        "--channels-last", "torch's channels-last memory layout (default on; a speed setting only)",
        action=argparse.BooleanOptionalAction))
    strength: float = field(default=1.0, metadata=_flag(
        "--strength", "how much of the network's correction to apply: 0 (the input) to 100 (default)",
        percent=True, type=float, metavar="PERCENT"))
    keep_noise_hu: float | None = field(default=None, metadata=_flag(
        "--keep-noise", "noise a normal-dose scan keeps: each slice gets the share of the correction beyond it, so "
        "light-dose slices are barely changed (default: the model's, see its card, times 0.75 for a very smooth kernel "
        "and 5 for a sharp one, see --kernel; 0: maximum denoising, the whole correction everywhere)",
        type=float, metavar="HU"))
    kernel: str = field(default="auto", metadata=_flag(
        "--kernel", "the reconstruction kernel's kind, which scales the default keep-noise (auto: from the DICOM "
        "header's ConvolutionKernel where known, else from the noise's texture)", choices=KERNELS))
    runtime: str = field(default="auto", metadata=_flag(
        "--runtime", "auto on the CPU: OpenVINO (mixed precision where the CPU has native bf16, else fp32), else "
        "ONNX Runtime fp32, else torch; each runs the same exported graph", choices=RUNTIMES))
    self_ensemble: int = field(default=1, metadata=_flag(
        "--self-ensemble", "average the correction over 1 (default), 2 (left-right mirror), 4 (every mirror) or 8 "
        "(and transposed) views of each slice: a little less noise and error, at VIEWS times the network's time",
        type=int, metavar="VIEWS"))
    adapt_minutes: float = field(default=0.0, metadata=_flag(
        "--adapt", "first fine-tune a copy of the model on this scan's own neighbouring slices for up to MINUTES "
        "(self-supervised; 0: off, the default). Helps on scanners, kernels and noise the model never saw; see "
        "docs/engine.md", type=float, metavar="MINUTES"))
    adapt_steps: int | None = field(default=None, metadata=_flag(
        "--adapt-steps", "adapt for at most N steps (with --adapt, whichever ends first; alone: no time limit)",
        type=int, metavar="N"))
    adapt_seed: int = field(default=0, metadata=_flag(
        "--adapt-seed", "seed of the adaptation's crops and initial state (a seed reproduces a step budget)",
        type=int, metavar="SEED"))

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise InputError(f"strength must be between 0 and 100 %; got {100 * self.strength:g} %")
        if self.keep_noise_hu is not None and not 0.0 <= self.keep_noise_hu <= MAX_KEEP_NOISE_HU:
            raise InputError(f"keep-noise must be between 0 and {MAX_KEEP_NOISE_HU:g} HU; got {self.keep_noise_hu:g}")
        for name, allowed in (("precision", PRECISIONS), ("compile", COMPILE_MODES), ("runtime", RUNTIMES),
                              ("kernel", KERNELS)):
            if getattr(self, name) not in allowed:
                raise InputError(f"{name} must be one of {allowed}; got {getattr(self, name)!r}")
        if self.self_ensemble not in SELF_ENSEMBLE_SIZES:
            raise InputError(f"self-ensemble must be one of {SELF_ENSEMBLE_SIZES} views; got {self.self_ensemble}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch size must be >= 1; got {self.batch_size}")
        if not 0.0 <= self.adapt_minutes <= MAX_ADAPT_MINUTES:
            raise InputError(f"--adapt must be between 0 and {MAX_ADAPT_MINUTES:g} minutes; got {self.adapt_minutes:g}")
        if self.adapt_steps is not None and self.adapt_steps < 1:
            raise InputError(f"--adapt-steps must be >= 1; got {self.adapt_steps}")

    @property
    def adapts(self) -> bool:
        """Whether the run first adapts the model to the scan (a time or a step budget is set)."""
        return self.adapt_minutes > 0 or self.adapt_steps is not None

    def replace(self, **changes) -> EngineOptions:
        """A copy with ``changes`` (validated like a new value)."""
        return dataclasses.replace(self, **changes)

    def to_argv(self) -> list[str]:
        """The flags that give these options back through ``add_engine_arguments`` (defaults left out)."""
        argv = []
        for spec in dataclasses.fields(self):
            value, meta = getattr(self, spec.name), spec.metadata
            if value == spec.default:
                continue
            if isinstance(value, bool):
                argv.append(meta["flag"] if value else "--no-" + meta["flag"][2:])
            else:
                argv += [meta["flag"], f"{100 * value:g}" if meta["percent"] else str(value)]
        return argv

    @classmethod
    def from_argv(cls, argv: list[str]) -> EngineOptions:
        parser = argparse.ArgumentParser(add_help=False)
        add_engine_arguments(parser, with_model=False)
        return options_from_args(parser.parse_args(argv))


def add_engine_arguments(parser: argparse.ArgumentParser, with_model: bool = True) -> None:
    """``--model`` and one flag per ``EngineOptions`` field: the command line's and the worker's."""
    if with_model:
        parser.add_argument("--model", "--weights", dest="weights", metavar="NAME|PATH",
                            help="an installed model's name (see `ldct-denoise models`) or a model folder / "
                                 "manifest.json (default: the bundled model)")
    for spec in dataclasses.fields(EngineOptions):
        meta = spec.metadata
        default = 100 * spec.default if meta["percent"] else spec.default
        parser.add_argument(meta["flag"], dest=spec.name, default=default, help=meta["help"], **meta["argparse"])


def options_from_args(args: argparse.Namespace) -> EngineOptions:
    """The options parsed by ``add_engine_arguments`` (percent flags turned into fractions here, once)."""
    values = {}
    for spec in dataclasses.fields(EngineOptions):
        value = getattr(args, spec.name)
        values[spec.name] = value / 100 if spec.metadata["percent"] and value is not None else value
    return EngineOptions(**values)
