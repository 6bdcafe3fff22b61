"""The evaluation study: its building blocks, and the quick report end to end on the real CT."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml
from scipy import stats

from evaluation.__main__ import main
from evaluation.config import STUDY_FILE, load_study
from evaluation.data import moved
from evaluation.sweep import flat_noise_hu, flat_soft_tissue, load_sweep
from evaluation.sweep_report import checks
from evaluation.tables import significance, summary
from evaluation.weight_range import passing_weights
from LDCTDenoiseLib.compare.alignment import align
from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import Volume
from LDCTDenoiseLib.simulation import make_phantom
from training.baselines import bm3d_available, estimate_noise_hu


def test_significance_marks_follow_the_p_value():
    assert [significance(p) for p in (0.001, 0.0099, 0.03, 0.049, 0.05, 0.5, float("nan"))] == \
        ["**", "**", "*", "*", "", "", ""]


def test_summary_tests_each_method_against_the_proposed_one_paired_over_slices():
    rng = np.random.default_rng(0)
    base = rng.normal(30, 1, 8)
    rows = [{"window": "w", "data_range": 400.0, "method": m, "slice": k,
             "psnr": v, "ssim": v / 40, "rmse_hu": 100 - v, "nrmse": 1 / v}
            for k in range(8) for m, v in (("A", base[k] + 0.5 + rng.normal(0, 0.1)), ("P", base[k]))]
    entries = {e["method"]: e for e in summary(rows, ["A", "P"], proposed="P")}
    a = [r["psnr"] for r in rows if r["method"] == "A"]
    p = [r["psnr"] for r in rows if r["method"] == "P"]
    assert entries["A"]["psnr_p"] == pytest.approx(stats.ttest_rel(a, p).pvalue)
    assert entries["A"]["psnr"] == pytest.approx(np.mean(a)) and entries["A"]["n"] == 8


def test_noise_estimate_sees_the_noise_std_of_a_phantom():
    clean = make_phantom((2, 256, 256), seed=1, texture_hu=0.0).array
    noisy = clean + np.random.default_rng(1).normal(0, 30, clean.shape).astype(np.float32)
    assert estimate_noise_hu(noisy) == pytest.approx(30, rel=0.15)


def _phantom_with_ndct_noise(ndct_noise_hu: float, added_hu: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean, NDCT, LDCT): a phantom, it with noise of its own, and that with more noise added."""
    clean = make_phantom((1, 256, 256), seed=3, texture_hu=0.0).array[0]
    rng = np.random.default_rng(3)
    ndct = (clean + rng.normal(0, ndct_noise_hu, clean.shape)).astype(np.float32)
    return clean, ndct, (ndct + rng.normal(0, added_hu, clean.shape)).astype(np.float32)


def test_only_a_share_of_a_perfect_correction_passes_both_noise_checks_against_a_noisy_ndct():
    clean, ndct, ldct = _phantom_with_ndct_noise(15.0, 10.0)
    shares = passing_weights(ldct, clean - ldct, ndct, flat_soft_tissue(ndct), keep_noise_hu=20.0)
    assert shares["ndct_noise_hu"] == pytest.approx(15, rel=0.1)
    assert shares["input_noise_hu"] == pytest.approx(np.hypot(15, 10), rel=0.1)
    assert 0 < shares["min_quiet"] < 0.4  # the input is noisier than the NDCT: some correction is needed ...
    assert 0.4 < shares["max_not_worse"] < 1  # ... but removing the NDCT's own noise too scores below the input
    assert shares["both"]
    assert shares["ahead_of_bm3d"] is None  # no BM3D given


def test_a_share_of_a_correction_is_ahead_of_bm3d_only_where_the_bm3d_image_is_worse_than_it():
    clean, ndct, ldct = _phantom_with_ndct_noise(15.0, 40.0)
    scan = lambda rival: passing_weights(ldct, clean - ldct, ndct, flat_soft_tissue(ndct), 20.0, rival)  # noqa: E731
    assert scan(ldct)["ahead_of_bm3d"]  # the input itself as the rival: any useful share beats it
    assert not scan(ndct)["ahead_of_bm3d"]  # the reference itself: nothing can


def test_a_correction_that_removes_nothing_never_brings_the_noise_down_to_the_ndcts():
    _, ndct, ldct = _phantom_with_ndct_noise(15.0, 10.0)
    shares = passing_weights(ldct, np.zeros_like(ldct), ndct, flat_soft_tissue(ndct), keep_noise_hu=20.0)
    assert shares["max_not_worse"] == 1.0 and np.isnan(shares["min_quiet"]) and not shares["both"]


def test_a_sweep_scanning_a_model_it_does_not_run_is_refused_by_name(tmp_path):
    study = yaml.safe_load(STUDY_FILE.read_text())
    study["sweep"]["weight_range"]["model"] = "no such model"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    with pytest.raises(InputError, match="'no such model' is not among the sweep's models"):
        load_sweep(tmp_path / "study.yaml")


def test_a_sweep_limited_to_some_models_keeps_their_settings_and_refuses_an_unknown_name():
    sweep = load_sweep()
    only = sweep.only(["scanner-noise model", "scanner-noise whole correction"])
    assert list(only.models) == ["scanner-noise model", "scanner-noise whole correction"]
    assert only.keep_noise_hu == {"scanner-noise whole correction": 0.0} and only.weight_range == sweep.weight_range
    assert sweep.only(["U-Net (Zhang)"]).weight_range is None
    with pytest.raises(InputError, match="no sweep model named nothing"):
        sweep.only(["nothing"])


def test_a_blurred_edge_measures_a_smaller_edge_gradient_on_the_ndcts_strongest_edges():
    from scipy import ndimage

    from evaluation.sweep import edge_gradient, strongest_edges

    ndct = np.full((128, 128), -1000.0, dtype=np.float32)
    ndct[20:108, 20:108] = 40.0
    ndct[50:78, 50:78] = 1000.0  # bone inside soft tissue
    edges = strongest_edges(ndct)
    assert edges.any() and not edges[64, 64]
    blurred = ndimage.gaussian_filter(ndct, 2.0)
    assert edge_gradient(blurred, edges) < 0.7 * edge_gradient(ndct, edges)


def test_the_moved_ndct_is_recovered_by_rigid_registration():
    volume = Volume(make_phantom((12, 128, 128), seed=2).array, spacing=(1.5, 1.5, 2.5), origin=(-96, -96, 0))
    moving, motion = moved(volume, rotation_deg=2.0, shift_mm=(3.0, -2.0, 0.0))
    alignment = align(moving, volume, "rigid")
    assert alignment.transform["rotation_deg"] == pytest.approx(2.0, abs=0.3)
    np.testing.assert_allclose(np.abs(alignment.transform["translation_mm"][:2]), [3.0, 2.0], atol=0.6)


def test_the_studys_regions_lie_on_their_cases(shared_ct):
    from evaluation.data import load_case

    for spec in load_study().cases:
        case = load_case(shared_ct.parent, spec)  # every box holds voxels (else load_case raises)
        assert all(region.voxels > 0 for region in case.regions)


def test_quick_report_is_produced_with_tables_figures_and_every_method(shared_ct, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["--quick", "--out", str(out), "--data", str(shared_ct.parent)]) == 0
    text = (out / "README.md").read_text()
    assert "QUICK MODE" in text and "## Table 3: regions" in text and "## Table 4: ablation" in text
    assert "soft tissue W400/L40" in text and "data range 400 HU" in text
    # The contrast-filled descending aorta lies above 240 HU: it is not measured in the soft-tissue window.
    assert re.search(r"Not measured in this window \(clipping would hide errors\): [^\n]*descending aorta "
                     r"\(\d+% of its NDCT voxels outside the window\)", text)
    figures = [line.rsplit("](", 1)[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert figures and all((out / f).read_bytes()[:4] == b"\x89PNG" for f in figures)
    results = json.loads((out / "results.json").read_text(),  # strict JSON: no Infinity or NaN
                         parse_constant=lambda constant: pytest.fail(f"{constant} in results.json"))
    methods = {m["name"]: m for m in results["methods"]}
    assert set(methods) == {m.name for m in load_study().methods}
    assert methods["BM3D"]["available"] == bm3d_available()
    for name, method in methods.items():
        assert method["available"] or method["why"], name
        if method["available"]:
            assert f": {name} |" in text or f": **{name}** |" in text
    assert (out / "slices.csv").read_text().count("\n") > 10


def sweep_row(method: str, noise_hu: float, flat_noise: float, psnr: float = 30.0, bias: float = 0.0,
              streak: str = "weak", low_frequency: float = 5.0) -> dict:
    return {"method": method, "slice": "s", "filter": "sharp", "streak": streak, "noise_hu": noise_hu,
            "psnr_soft": psnr, "psnr_full": psnr, "flat_noise_hu": flat_noise, "bias_hu": bias,
            "low_frequency_error_hu": low_frequency}


def test_the_restated_checks_hold_a_model_to_its_input_where_the_ndct_or_the_input_sets_no_fair_bar():
    rows = [sweep_row("LDCT", 20, 26.0, psnr=28.0), sweep_row("model", 20, 15.0, psnr=29.0),  # NDCT 12 < model
            sweep_row("LDCT", 40, 45.0, psnr=25.0), sweep_row("model", 40, 13.0, bias=4.0),
            sweep_row("LDCT", 150, 160.0, psnr=15.0, bias=-9.0, streak="strong", low_frequency=20.0),
            sweep_row("model", 150, 17.0, bias=-6.0, streak="strong", low_frequency=13.0)]
    outcome = checks({"rows": rows, "ndct_flat_noise_hu": {"s": 12.0}})["model"]
    assert outcome["flat noise <= input's (< 40 HU added)"] == {"pass": 1, "of": 1, "needed": 1}
    assert outcome["flat noise <= NDCT's (40-80 HU added)"] == {"pass": 0, "of": 1, "needed": 1}
    assert outcome["flat noise <= 1.5 x NDCT's (> 80 HU added)"] == {"pass": 1, "of": 1, "needed": 1}
    assert outcome["not worse than the input (>= 10 HU added, both windows)"]["pass"] == 3
    # 4 HU of bias fails; 6 HU where starvation biased the input itself by 9 HU passes
    assert outcome["abs(mean HU bias) <= 3 HU, or <= the input's"] == {"pass": 2, "of": 3, "needed": 3}
    assert outcome["low-frequency error <= 0.6 x input's (strong streaks)"] == {"pass": 0, "of": 1, "needed": 1}


def test_bm3d_need_only_be_beaten_in_44_of_48_cells():
    rows = [row for noise in range(20, 68) for row in (
        sweep_row("LDCT", noise, 30.0, psnr=20.0), sweep_row("BM3D", noise, 20.0, psnr=31.0 if noise < 24 else 29.0),
        sweep_row("model", noise, 10.0, psnr=30.0))]
    outcome = checks({"rows": rows, "ndct_flat_noise_hu": {"s": 12.0}})["model"]
    assert outcome["ahead of BM3D (>= 20 HU, both windows; 92% of cells needed)"] == {"pass": 44, "of": 48,
                                                                                    "needed": 44}


def test_quick_sweep_measures_every_method_against_the_ndct_and_checks_each_model(shared_ct, tmp_path):
    out = tmp_path / "report"
    assert main(["--quick", "--only", "sweep", "--out", str(out), "--data", str(shared_ct.parent)]) == 0
    text = (out / "sweep" / "README.md").read_text()
    assert "QUICK MODE" in text and "## Acceptance checks" in text and "data range 400" in text
    result = json.loads((out / "sweep" / "sweep.json").read_text(),
                        parse_constant=lambda constant: pytest.fail(f"{constant} in sweep.json"))
    sweep = load_sweep(quick=True)
    assert set(result["checks"]) == set(sweep.models)
    rows = (out / "sweep" / "sweep.csv").read_text().splitlines()
    assert len(rows) == 1 + len(sweep.slices) * len(sweep.cells()) * (2 + len(sweep.models))  # + LDCT, Gaussian
    figures = [line.rsplit("](", 1)[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(figures) == 2 and all((out / "sweep" / f).read_bytes()[:4] == b"\x89PNG" for f in figures)
    assert sum(result["outputs"].values()) >= len(sweep.slices) * len(sweep.cells()) * (1 + len(sweep.models))
    assert f"{result['outputs']['made']} outputs made" in text
    scanned = result["weight_range"]
    assert scanned["model"] == sweep.weight_range[0] and len(scanned["cells"]) == len(sweep.slices)  # one 20 HU cell
    assert f"Shares of the {scanned['model']}'s correction" in text
    assert all(cell["ahead_of_bm3d"] is None for cell in scanned["cells"])  # no BM3D in the quick sweep


def test_flat_soft_tissue_noise_is_the_local_noise_std_and_ignores_edges():
    ndct = np.full((96, 96), 40.0, np.float32)
    ndct[:, :30] = -1000.0  # air beside the body
    ndct[40:56, 60:76] = 400.0  # a bone: an edge inside the body
    flat = flat_soft_tissue(ndct)
    assert flat.any() and not flat[:, :34].any() and not flat[38:58, 58:78].any()
    noisy = ndct + np.random.default_rng(0).normal(0, 20, ndct.shape).astype(np.float32)
    assert flat_noise_hu(noisy, flat) == pytest.approx(20.0, rel=0.1) and flat_noise_hu(ndct, flat) == 0.0


def test_the_speed_section_quotes_only_the_newest_benchmark_table():
    from evaluation.report import benchmark_summary

    results = ("# Newest run\n\nintro\n\n| path | s |\n| --- | --- |\n| onnx | 0.7 |\n\nprose\n\n| other | 1 |\n"
               "\n# Older run\n\n| path | s |\n| --- | --- |\n| old | 2.0 |\n")
    lines = benchmark_summary(results)
    assert "Newest run" in lines[1] and lines[3:] == ["| path | s |", "| --- | --- |", "| onnx | 0.7 |"]
    assert benchmark_summary("# Only prose\n\nno table\n") == []


def test_the_kernel_calibration_keeps_the_keep_worse_than_the_input_in_the_fewest_cells():
    from evaluation.kernel_calibration import chosen_keep, summary

    def row(keep, soft, full):
        return {"kind": "sharp", "keep_hu": keep, "gain_soft": soft, "gain_full": full}

    rows = [row(keep, soft, full) for keep, soft, full in [
        (40, 3.0, -2.0), (40, 4.0, 1.0),  # the largest gain, but worse once
        (80, 0.0, -0.05), (80, 1.0, 0.5),  # never worse (within 0.1 dB)
        (100, 0.0, 0.0), (100, 0.2, 0.1)]]
    rows += [row(keep, -1.0, -1.0) for keep in (10, 15, 20, 25, 30, 50, 60, 70)] * 2
    lines = summary(rows)["sharp"]
    assert chosen_keep(lines)["keep_hu"] == 80
    assert next(line for line in lines if line["keep_hu"] == 40)["not_worse"] == 1
    assert chosen_keep([{**line, "not_worse": 0} for line in lines])["keep_hu"] == 40  # a tie: the best mean
