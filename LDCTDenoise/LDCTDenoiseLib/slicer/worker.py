"""The child process that denoises one volume: ``python -m LDCTDenoiseLib.slicer.worker IN OUT [...]``.

IN and OUT are hand-off files (``.npy``, ``io.handoff``: what the module uses) or volume files (NRRD ...).

The Slicer module runs it (with PythonSlicer) so torch never blocks the GUI. The protocol is line
based on stdout: ``STAGE name`` when a stage begins (adapting, denoising), ``PROGRESS done total``
within it, ``DONE {json}`` at the end; on failure the
last stderr line is ``ERROR reason`` and the exit status is 1. Every other line (stderr included:
warnings, a torch.compile fallback) is log text the module shows in its log pane. The output file
is written atomically, so a killed child leaves nothing at OUT.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..engine.adaptation import adapted_for
from ..engine.inference import VolumeDenoiser
from ..engine.options import add_engine_arguments, options_from_args
from ..errors import LDCTError
from ..io import read_volume_file, write_volume_file
from ..io.handoff import is_handoff, read_handoff, write_handoff
from ..models.weights import find_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="LDCTDenoiseLib.slicer.worker", description=__doc__)
    parser.add_argument("input", help="hand-off (.npy) or volume file (NRRD ...) written by the caller")
    parser.add_argument("output", help="hand-off (.npy) or volume file to write")
    add_engine_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        options = options_from_args(args)
        volume = read_handoff(args.input, mapped=True) if is_handoff(args.input) else read_volume_file(args.input)
        model = find_model(args.weights)
        if options.adapts:
            print("STAGE adapting", flush=True)
        adaptation = adapted_for(model, volume, options, lambda stage, done, total: print(
            f"PROGRESS {done} {total}", flush=True))
        for note in adaptation.summary.get("notes", []):
            print(f"Adaptation: {note}", flush=True)
        denoiser = VolumeDenoiser(adaptation.model, options)
        views = f"{options.self_ensemble} views averaged, " if options.self_ensemble > 1 else ""
        print(f"Model {model.describe()['name']} on {denoiser.device} ({str(denoiser.dtype).split('.')[-1]}), "
              f"strength {100 * options.strength:g} %, {_keep_text(options, denoiser)}, {views}"
              f"{volume.array.shape[0]} slices of {volume.array.shape[2]} x {volume.array.shape[1]}", flush=True)
        print("STAGE denoising", flush=True)
        print(f"PROGRESS 0 {volume.array.shape[0]}", flush=True)
        denoised = denoiser(volume.array, progress=lambda done, total: print(f"PROGRESS {done} {total}", flush=True),
                            header_kernel=volume.metadata.get("convolution_kernel"))
        if denoiser.kernel is not None:
            print(f"Kept {denoiser.keep_noise_hu:g} HU of noise for a {denoiser.kernel.describe()}", flush=True)
        write = write_handoff if is_handoff(args.output) else write_volume_file
        write(denoiser.labelled(volume, denoised), args.output)
    except (LDCTError, OSError) as error:
        print(f"ERROR {str(error).splitlines()[0]}", file=sys.stderr, flush=True)
        return 1
    adapted = {"adapted": adaptation.adapted} if options.adapts else {}
    print("DONE " + json.dumps({"model": model.describe()["name"], **denoiser.last_run, **adapted}), flush=True)
    return 0


def _keep_text(options, denoiser: VolumeDenoiser) -> str:
    standard = denoiser.keep_for("standard")
    if options.keep_noise_hu is None and standard > 0:
        return f"keep-noise following the kernel ({standard:g} HU on a standard one)"
    return f"keep {denoiser.keep_noise_hu:g} HU of noise"


if __name__ == "__main__":
    sys.exit(main())
