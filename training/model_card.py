"""A model card drafted from what the manifest already records: method, network, budget, machine, validation.

``ldct-train card MODEL --good TEXT --bad TEXT`` writes ``MODEL/MODEL_CARD.md``; what a model is good
and bad at is the author's judgement and is asked for, everything else is read, never typed.
"""

from __future__ import annotations

import json
from pathlib import Path

from LDCTDenoiseLib.atomic import write_atomically
from LDCTDenoiseLib.models.weights import load_model


def model_card(folder: str | Path, title: str = "", good: str = "", bad: str = "") -> str:
    folder = Path(folder)
    model = load_model(folder)
    manifest, provenance = model.manifest, model.manifest["provenance"]
    config = provenance["config"]
    parameters = sum(p.numel() for p in model.generator.parameters())
    start = f"initialised from {config['init_from']}" if config.get("init_from") else "from scratch"
    lines = [
        f"# Model card: `{folder.name}`{f' ({title})' if title else ''}", "",
        "**Not clinically validated.** A research model; see `Resources/Models/default/MODEL_CARD.md` for the "
        "bundled default.", "",
        f"- Method: {provenance['method']} (`{provenance.get('method_name', 'hu2024')}`); architecture "
        f"`{manifest['architecture']}` with {json.dumps(manifest['config'])}: {parameters:,} parameters; "
        f"{manifest.get('dtype', 'float32')} safetensors, loaded as fp32.",
        f"- Training: preset `{config.get('name', '?')}`, stage {provenance['stage']}, {provenance['steps']} steps of "
        f"batch {config['schedule']['batch']} x {config['data']['crop']}x{config['data']['crop']} crops, "
        f"{provenance['training_seconds']:.0f} s of step time, lr {config['optim']['lr']:g}, {start}; on "
        f"{provenance['machine']['processor']} ({provenance['machine']['platform']}), torch "
        f"{provenance['software']['torch']}.",
        f"- Data and noise: `{Path(str(config['data']['dataset'])).name}` (training split), noise "
        f"`{config['noise']['kind']}`{' drawn per crop' if config['noise']['kind'] == 'scanner' else ''}.",
    ]
    scores = provenance.get("validation") or {}
    if scores:
        scan = config["validation"].get("scanner") or {}
        setting = (f"{scan.get('added_noise_hu', '?')} HU added, {scan.get('filter', '?')} {scan.get('cutoff', '')}"
                   if config["noise"]["kind"] == "scanner" else f"dose {config['validation']['dose_fraction']:g}")
        lines.append(
            f"- Validation at the exported step ({config['validation']['max_slices']} validation-split slices at most, "
            f"{config['validation']['crop']} px centre, {setting}), soft-tissue window: PSNR "
            f"{scores['output_psnr_soft']:.2f} dB (input {scores['input_psnr_soft']:.2f}), SSIM "
            f"{scores['output_ssim_soft']:.3f} (input {scores['input_ssim_soft']:.3f}), RMSE "
            f"{scores['output_rmse_hu_soft']:.1f} HU (input {scores['input_rmse_hu_soft']:.1f}).")
    else:
        lines.append("- Validation: none recorded (the run did not validate).")
    lines += [f"- Good at: {good or '(not stated)'}", f"- Bad at: {bad or '(not stated)'}",
              "- Held-out robustness sweep and study: `docs/evaluation` when they list this model."]
    return "\n".join(lines) + "\n"


def write_model_card(folder: str | Path, title: str = "", good: str = "", bad: str = "") -> Path:
    path = Path(folder) / "MODEL_CARD.md"
    text = model_card(folder, title, good, bad)
    write_atomically(path, lambda tmp: tmp.write_text(text))
    return path
