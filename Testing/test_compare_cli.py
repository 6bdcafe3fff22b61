"""``ldct-denoise compare`` on a simulated pair: files, numbers, the figure, warnings and errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from LDCTDenoiseLib.cli import main
from LDCTDenoiseLib.io import write_volume
from LDCTDenoiseLib.simulation import ProjectionNoise, make_phantom, simulate_low_dose


@pytest.fixture(scope="module")
def simulated_pair(tmp_path_factory) -> Path:
    """NDCT, its simulated 25 % dose LDCT, a Gaussian-filtered LDCT, and an NDCT the patient moved in."""
    folder = tmp_path_factory.mktemp("pair")
    ndct = make_phantom((6, 96, 96), seed=0)
    ldct = simulate_low_dose(ndct, ProjectionNoise(views=90), seed=0)
    write_volume(ndct, folder / "ndct.nrrd")
    write_volume(ldct, folder / "ldct.nrrd")
    write_volume(ldct.with_array(ndimage.gaussian_filter(ldct.array, (0, 0.8, 0.8))), folder / "gauss.nrrd")
    write_volume(ndct.with_array(np.roll(ndct.array, 2, axis=2)), folder / "ndct-moved.nrrd")  # 7.5 mm along x
    return folder


def _run(folder: Path, out: Path, *extra: str) -> int:
    return main(["compare", "--ndct", str(folder / "ndct.nrrd"), "--volume", f"LDCT={folder / 'ldct.nrrd'}",
                 "--volume", f"Gaussian={folder / 'gauss.nrrd'}", "--roi", "centre=box:0,0,6:60,60,8",
                 "--roi", "soft=hu:-100,100", "--out", str(out), "--quiet", *extra])


def test_compare_writes_tables_densities_and_figures(simulated_pair, tmp_path):
    out = tmp_path / "report"
    assert _run(simulated_pair, out) == 0
    assert {p.name for p in out.iterdir()} == {"metrics.csv", "slices.csv", "t_tests.csv", "densities.csv",
                                               "report.json", "table.md", "density-centre.png", "density-soft.png"}
    report = json.loads((out / "report.json").read_text())
    assert [w["data_range"] for w in report["windows"]] == [400.0, 4096.0]
    assert report["alignment"]["registration"] == "none" and report["warnings"] == []
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    expected = {(region, method) for region in ("centre", "soft") for method in ("LDCT", "Gaussian")}
    assert {(r["region"], r["method"]) for r in rows} == expected
    assert all("HU" in r["window"] and float(r["data_range"]) > 0 for r in rows)
    curves = {c["name"] for c in report["regions"][0]["density"]["curves"]}
    assert curves == {"NDCT", "LDCT", "Gaussian"}
    assert (out / "density-centre.png").read_bytes()[:4] == b"\x89PNG"
    assert "| centre | LDCT |" in (out / "table.md").read_text()


def test_windows_can_be_chosen(simulated_pair, tmp_path):
    assert _run(simulated_pair, tmp_path / "r", "--window=-100,200") == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [(w["low"], w["high"]) for w in report["windows"]] == [(-100.0, 200.0)]


def test_without_a_region_the_whole_body_is_compared(simulated_pair, tmp_path):
    out = tmp_path / "report"
    code = main(["compare", "--ndct", str(simulated_pair / "ndct.nrrd"), "--volume",
                 f"LDCT={simulated_pair / 'ldct.nrrd'}", "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["regions"]] == ["body"]


def test_a_misaligned_ndct_is_reported_with_a_warning(simulated_pair, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["compare", "--ndct", str(simulated_pair / "ndct-moved.nrrd"), "--volume",
                 f"LDCT={simulated_pair / 'ldct.nrrd'}", "--roi", "soft=hu:-100,100", "--out", str(out), "--quiet"])
    assert code == 0
    assert "misaligned" in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["warnings"]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--volume", "LDCT"], "NAME=PATH"), (["--roi", "far=box:900,0,0:10,10,10"], "outside the volume"),
     (["--roi", "x=cube:1"], "box, bounds, label, hu or body"), (["--window=5,1"], "HIGH must exceed LOW")],
)
def test_bad_arguments_are_one_line_errors_and_nothing_is_written(simulated_pair, tmp_path, capsys, args, message):
    base = ["compare", "--ndct", str(simulated_pair / "ndct.nrrd"), "--out", str(tmp_path / "report"), "--quiet"]
    if args[0] != "--volume":
        base += ["--volume", f"LDCT={simulated_pair / 'ldct.nrrd'}"]
    if args[0] != "--roi":
        base += ["--roi", "soft=hu:-100,100"]
    assert main(base + args) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_an_existing_report_folder_is_not_overwritten(simulated_pair, tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _run(simulated_pair, out) == 1
    assert "not an empty folder" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"


def test_hu_range_regions_are_chosen_on_the_ndct_not_on_a_noisy_volume(simulated_pair):
    from LDCTDenoiseLib.compare.report import compare, parse_roi
    from LDCTDenoiseLib.io import read_volume

    ndct, ldct = read_volume(simulated_pair / "ndct.nrrd"), read_volume(simulated_pair / "ldct.nrrd")
    report = compare(ndct, {"LDCT": ldct}, [parse_roi("soft=hu:-100,100")])
    mask = report.regions[0].region.mask
    assert np.all((ndct.array[mask] >= -100) & (ndct.array[mask] <= 100))
    assert "of the NDCT" in report.regions[0].region.description


def test_a_box_partly_outside_the_volume_is_measured_inside_with_a_note(simulated_pair, tmp_path):
    out = tmp_path / "report"
    code = main(["compare", "--ndct", str(simulated_pair / "ndct.nrrd"), "--volume",
                 f"LDCT={simulated_pair / 'ldct.nrrd'}", "--roi", "tall=box:0,0,6:60,60,60", "--out", str(out),
                 "--quiet"])
    assert code == 0
    notes = json.loads((out / "report.json").read_text())["notes"]
    assert len(notes) == 1 and notes[0].startswith("region tall: ") and "of the box lies outside the volume" in notes[0]
    share = int(notes[0].split(": ")[1].split("%")[0])
    assert 70 <= share <= 80  # the volume is 15 mm deep (6 slices of 2.5 mm), the box 60 mm: 3/4 outside


def test_a_box_inside_the_volume_gets_no_note(simulated_pair, tmp_path):
    assert _run(simulated_pair, tmp_path / "r") == 0
    assert json.loads((tmp_path / "r" / "report.json").read_text())["notes"] == []
