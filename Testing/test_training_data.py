"""Datasets, patient-level splits, the series cache and the crop samplers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import read_volume, write_volume
from LDCTDenoiseLib.models.normalization import Normalization
from LDCTDenoiseLib.simulation import ProjectionNoise, make_phantom, simulate_low_dose
from training.config import DataConfig, NoiseConfig, Stage2Config
from training.data import Patient, load_patients, split_patients
from training.sampling import SAMPLE_FIELDS, CropSpec, SlicePair, Stage1Crops, Stage2Pairs, StepBatches
from training.volumes import SeriesCache


def test_folder_convention_finds_each_patients_ndct(phantom_dataset):
    patients = load_patients(phantom_dataset)
    assert [p.name for p in patients] == ["patient-0", "patient-1", "patient-2"]
    assert all(p.ndct.name == "ndct.nrrd" and p.ldct is None and p.split is None for p in patients)


def test_csv_manifest_paths_are_relative_to_it_and_fix_splits(phantom_dataset, tmp_path):
    manifest = tmp_path / "lists" / "data.csv"
    manifest.parent.mkdir()
    rel = os.path.relpath(phantom_dataset, manifest.parent)
    manifest.write_text(
        "patient,ndct,ldct,split\n"
        f"a,{phantom_dataset}/patient-0/ndct.nrrd,,test\n"
        f"b,{rel}/patient-1/ndct.nrrd,{rel}/patient-2/ndct.nrrd,\n"
    )
    a, b = load_patients(manifest)
    assert a.split == "test" and b.split is None
    assert b.ndct == (phantom_dataset / "patient-1" / "ndct.nrrd").resolve() and b.ldct.name == "ndct.nrrd"


def test_yaml_manifest(phantom_dataset, tmp_path):
    manifest = tmp_path / "data.yaml"
    manifest.write_text(f"patients:\n  - patient: x\n    ndct: {phantom_dataset}/patient-0/ndct.nrrd\n")
    assert load_patients(manifest)[0].name == "x"


@pytest.mark.parametrize(
    ("rows", "message"),
    [("patient,ndct\nx,missing.nrrd\n", "does not exist"), ("patient,ndct\nx,\n", "'patient' and 'ndct' are required"),
     ("patient,ndct,split\nx,{ndct},holdout\n", "split must be one of"), ("patient,ndct\n", "lists no patients"),
     ("patient,ndct\nx,{ndct}\nx,{ndct}\n", "names must be unique")],
)
def test_bad_manifests_say_what_is_wrong(phantom_dataset, tmp_path, rows, message):
    manifest = tmp_path / "data.csv"
    manifest.write_text(rows.format(ndct=phantom_dataset / "patient-0" / "ndct.nrrd"))
    with pytest.raises(InputError, match=message):
        load_patients(manifest)


def test_a_patient_folder_without_ndct_is_an_error(tmp_path):
    (tmp_path / "patient" / "notes").mkdir(parents=True)
    with pytest.raises(InputError, match="no NDCT found"):
        load_patients(tmp_path)


def _patients(count: int) -> list[Patient]:
    return [Patient(f"p{i:02d}", Path(f"/data/p{i:02d}")) for i in range(count)]


def test_split_is_patient_level_reproducible_and_as_in_the_paper():
    splits = split_patients(_patients(64), validation=0, test=18, seed=3)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [46, 0, 18]
    names = [p.name for s in splits.values() for p in s]
    assert sorted(names) == sorted(p.name for p in _patients(64))
    assert splits == split_patients(_patients(64), validation=0, test=18, seed=3)
    assert splits != split_patients(_patients(64), validation=0, test=18, seed=4)
    fractions = split_patients(_patients(64), validation=0.1, test=0.28, seed=0)
    assert [len(fractions[s]) for s in ("validation", "test")] == [6, 18]


def test_manifest_splits_are_kept():
    patients = _patients(5)
    patients[0] = Patient("held-out", Path("/x"), split="test")
    splits = split_patients(patients, validation=1, test=1, seed=0)
    assert [p.name for p in splits["test"]] == ["held-out"] and len(splits["validation"]) == 1


def test_cache_decodes_once_and_simulates_as_the_library_does(phantom_dataset, tmp_path):
    patient = load_patients(phantom_dataset)[0]
    cache = SeriesCache(tmp_path / "cache", quiet=True)
    ndct = cache.ndct(patient)
    volume = read_volume(patient.ndct)
    np.testing.assert_array_equal(ndct.hu, volume.array)
    assert ndct.spacing == volume.spacing and isinstance(ndct.hu, np.memmap)
    settings = ProjectionNoise(views=32)
    simulated = cache.simulated_ldct(patient, settings, seed=5)
    np.testing.assert_allclose(simulated.hu, simulate_low_dose(volume, settings, seed=5).array, atol=1e-4)
    entry = Path(simulated.hu.filename)
    stamp = entry.stat().st_mtime_ns
    assert Path(cache.simulated_ldct(patient, settings, seed=5).hu.filename).stat().st_mtime_ns == stamp
    assert Path(cache.simulated_ldct(patient, settings, seed=6).hu.filename) != entry


def test_parallel_simulation_equals_serial(phantom_dataset, tmp_path):
    patient = load_patients(phantom_dataset)[1]
    settings = ProjectionNoise(views=32)
    serial = SeriesCache(tmp_path / "a", workers=1, quiet=True).simulated_ldct(patient, settings, 0).hu
    parallel = SeriesCache(tmp_path / "b", workers=2, quiet=True).simulated_ldct(patient, settings, 0).hu
    np.testing.assert_array_equal(serial, parallel)


def test_an_edited_series_is_decoded_again(tmp_path):
    path = tmp_path / "p" / "ndct.nrrd"
    path.parent.mkdir()
    write_volume(make_phantom((2, 32, 32), seed=0), path)
    cache = SeriesCache(tmp_path / "cache", quiet=True)
    first = np.array(cache.ndct(Patient("p", path)).hu)
    write_volume(make_phantom((2, 32, 32), seed=1), path)
    assert not np.array_equal(first, cache.ndct(Patient("p", path)).hu)


def test_real_ldct_pairs_put_the_ndct_on_the_ldct_grid(tmp_path):
    ndct = make_phantom((4, 48, 48), seed=0)
    ldct = make_phantom((3, 40, 40), pixel_mm=9.0, slice_mm=2.5, seed=0)
    write_volume(ndct, tmp_path / "ndct.nrrd")
    write_volume(ldct, tmp_path / "ldct.nrrd")
    low, normal = SeriesCache(tmp_path / "cache", quiet=True).real_pair(
        Patient("p", tmp_path / "ndct.nrrd", tmp_path / "ldct.nrrd"))
    assert normal.hu.shape == low.hu.shape == (3, 40, 40) and normal.spacing == low.spacing


def _pair_volume(seed: int = 0) -> SlicePair:
    ndct = make_phantom((3, 96, 96), seed=seed).array
    return SlicePair(ndct, (ndct + np.float32(40.0),))


def test_samples_depend_only_on_seed_and_index():
    dataset = Stage1Crops([_pair_volume()], CropSpec(32, seed=1, normalization=Normalization()), noise=NoiseConfig())
    first, again, other = dataset[7], dataset[7], dataset[8]
    assert all(first[k].shape == (1, 32, 32) for k in ("input", "target"))
    assert np.array_equal(first["input"], again["input"]) and not np.array_equal(first["input"], other["input"])


def test_gaussian_stage1_noise_has_the_configured_std():
    noise = NoiseConfig(gaussian_std_hu=[30.0, 30.0])
    dataset = Stage1Crops([_pair_volume()], CropSpec(64, seed=0, normalization=Normalization()), noise=noise)
    scale = Normalization().scale
    residuals = [(s["input"] - s["target"]).numpy() * scale for s in (dataset[i] for i in range(20))]
    inside = np.concatenate([r[np.abs(r) < 500] for r in residuals])  # clipping at the range ends aside
    assert abs(inside.std() - 30.0) < 1.5


def test_projection_stage1_pairs_come_from_the_low_dose_volume():
    noise = NoiseConfig(kind="projection")
    sample = Stage1Crops([_pair_volume()], CropSpec(32, seed=0, normalization=Normalization()), noise=noise)[3]
    np.testing.assert_allclose((sample["input"] - sample["target"]).numpy() * Normalization().scale, 40.0, atol=0.01)


def test_air_only_crops_are_drawn_again():
    ndct = np.full((2, 128, 128), -1000.0, dtype=np.float32)
    ndct[:, 96:, 96:] = 40.0  # tissue in one corner only
    crops = CropSpec(32, seed=0, normalization=Normalization(), min_tissue_fraction=0.1)
    dataset = Stage1Crops([SlicePair(ndct)], crops, noise=NoiseConfig(gaussian_std_hu=[0.0, 0.0]))
    tissue = [float((dataset[i]["target"] > Normalization().to_network(np.array(-700.0))).float().mean())
              for i in range(30)]
    assert min(tissue) >= 0.1


def body_of_width(width_mm: float, pixel_mm: float = 2.0, size: int = 256) -> np.ndarray:
    """An ellipse of water (0 HU) ``width_mm`` wide and 200 mm deep, in air."""
    yy, xx = (np.mgrid[:size, :size] - size / 2) * pixel_mm
    return np.where((xx / (width_mm / 2)) ** 2 + (yy / 100.0) ** 2 < 1, 0.0, -1000.0).astype(np.float32)


def test_a_wide_body_has_rays_long_enough_to_starve_and_a_chest_has_none():
    from training.sampling import starvation_share

    assert starvation_share(body_of_width(280.0), 2.0) == 0.0
    assert 0.0 < starvation_share(body_of_width(380.0), 2.0) < starvation_share(body_of_width(460.0), 2.0) < 0.5


def test_a_starvation_boost_draws_the_starving_slices_more_often():
    from training.sampling import starvation_share

    volume = SlicePair(np.stack([body_of_width(280.0), body_of_width(460.0)]), pixel_mm=2.0)
    share = starvation_share(volume.ndct[1], 2.0)

    def wide_share(boost: float) -> float:
        crops = CropSpec(64, seed=0, normalization=Normalization(), starvation_boost=boost)
        dataset = Stage1Crops([volume], crops, noise=NoiseConfig())
        return np.mean([dataset.locate(dataset.rng(i))[1] == 1 for i in range(2000)])

    assert abs(wide_share(0.0) - 0.5) < 0.05
    expected = (1 + 10.0 * share) / (2 + 10.0 * share)
    assert abs(wide_share(10.0) - expected) < 0.05 and expected > 0.6


def test_stage2_pairs_are_near_but_not_pixel_aligned():
    ndct = make_phantom((3, 128, 128), seed=0).array
    volume = SlicePair(ndct, (ndct.copy(),))
    dataset = Stage2Pairs([volume], CropSpec(64, seed=0, normalization=Normalization()),
                          pairs=Stage2Config(max_slice_offset=0, rotation_deg=3, shift_px=3, elastic_px=2))
    differences, correlations = [], []
    for i in range(10):
        sample = dataset[i]
        a, b = sample["input"].numpy().ravel(), sample["target"].numpy().ravel()
        differences.append(np.abs(a - b).max())
        correlations.append(np.corrcoef(a, b)[0, 1])
    assert min(differences) > 0.01  # moved
    assert np.median(correlations) > 0.6  # but the same anatomy


def test_step_batches_split_each_global_batch_among_processes():
    assert list(StepBatches(4, start_step=2, end_step=4)) == [[8, 9, 10, 11], [12, 13, 14, 15]]
    ranks = [list(StepBatches(4, 2, 4, rank=r, world_size=2)) for r in (0, 1)]
    assert ranks == [[[8, 9], [12, 13]], [[10, 11], [14, 15]]]
    with pytest.raises(ValueError, match="divide"):
        StepBatches(5, 0, 1, world_size=2)


def test_scanner_stage1_crops_record_their_draws_and_are_reproducible():
    volume = make_phantom((2, 96, 96))
    pair = SlicePair(volume.array, pixel_mm=volume.spacing[0])
    noise = NoiseConfig(kind="scanner", scanner={"added_noise_hu": [20, 20], "views": [120, 120]})
    augment = DataConfig(flips=True, rot90=True, pixel_scale=[0.8, 1.25])
    dataset = Stage1Crops([pair], CropSpec(32, seed=3, normalization=Normalization()), noise, augment)
    samples = [dataset[i] for i in range(6)]
    again = dataset[2]
    assert np.array_equal(samples[2]["input"], again["input"]) and np.array_equal(samples[2]["params"], again["params"])
    params = [dict(zip(SAMPLE_FIELDS, s["params"].tolist(), strict=True)) for s in samples]
    assert all(p["added_noise_hu"] == pytest.approx(20.0) and p["views"] == 120 for p in params)
    pixel = [p["pixel_mm"] / volume.spacing[0] for p in params]
    assert all(0.8 <= f <= 1.25 for f in pixel) and len({round(f, 3) for f in pixel}) == 6
    assert {p["rot90"] for p in params} | {p["flip"] for p in params} != {0.0}
    residual = np.concatenate([(s["input"] - s["target"]).numpy().ravel() for s in samples]) * Normalization().scale
    assert 5.0 < residual.std() < 60.0  # noise of the asked order where the crops hold tissue and air


def test_an_unscaled_unturned_scanner_crop_is_the_ndct_itself():
    volume = make_phantom((1, 64, 64))
    noise = NoiseConfig(kind="scanner", scanner={"added_noise_hu": [10, 10], "views": [64, 64]})
    dataset = Stage1Crops([SlicePair(volume.array, pixel_mm=volume.spacing[0])],
                          CropSpec(32, seed=0, normalization=Normalization()), noise)
    sample = dataset[0]
    target_hu = Normalization().to_hu(sample["target"].numpy()[0])
    windows = [volume.array[0, t : t + 32, c : c + 32] for t in range(33) for c in range(33)]
    assert any(np.allclose(target_hu, w, atol=0.05) for w in windows)


def test_a_subject_belongs_to_one_split(tmp_path, phantom_dataset):
    ndct = phantom_dataset / "patient-0" / "ndct.nrrd"
    manifest = tmp_path / "data.csv"
    manifest.write_text(f"# two studies of one subject\npatient,subject,ndct,split\na1,A,{ndct},train\n"
                        f"a2,A,{ndct},test\n")
    with pytest.raises(InputError, match="subject A has series in several splits"):
        load_patients(manifest)
    manifest.write_text("patient,subject,ndct\n" + "".join(f"{n},{n[0]},{ndct}\n" for n in ("a1", "a2", "b1", "c1")))
    for seed in range(5):
        splits = split_patients(load_patients(manifest), validation=1, test=1, seed=seed)
        people = {name: {p.person for p in patients} for name, patients in splits.items()}
        assert not (people["train"] & people["test"]) and not (people["train"] & people["validation"])


def test_the_shared_data_manifest_lists_every_series_readable_and_splits_by_subject(shared_ct):
    manifest = Path(__file__).resolve().parents[1] / "training" / "datasets" / "shared-ct-all.csv"
    patients = load_patients(manifest)
    listed = {p.ndct.resolve() for p in patients}
    unlisted = [folder for folder in {f.parent.resolve() for f in shared_ct.rglob("*.dcm")}
                if not any(folder == series or series in folder.parents for series in listed)]
    assert not unlisted, f"series in ../shared/data missing from the manifest: {unlisted}"
    splits = split_patients(patients, 0, 0, 0)
    people = {name: {p.person for p in members} for name, members in splits.items()}
    assert not (people["train"] & people["test"] | people["train"] & people["validation"] | people["test"]
                & people["validation"])
    assert {"thorax-141", "TCGA-DE-A4MA"} <= people["test"]  # Philips; head, neck and shoulders
    for patient in patients:
        volume = read_volume(patient.ndct)
        assert volume.array.ndim == 3 and np.isfinite(volume.array).all() and min(volume.spacing) > 0


def test_scanner_stage2_pairs_are_noisy_unaligned_and_need_no_low_dose_volume():
    volume = make_phantom((3, 96, 96))
    noise = NoiseConfig(kind="scanner", scanner={"added_noise_hu": [30, 30], "views": [96, 96]})
    pairs = Stage2Config(rotation_deg=3.0, shift_px=3.0, elastic_px=2.0)
    dataset = Stage2Pairs([SlicePair(volume.array, pixel_mm=volume.spacing[0])],
                          CropSpec(48, seed=2, normalization=Normalization()), pairs, noise)
    sample, again = dataset[4], dataset[4]
    assert np.array_equal(sample["input"], again["input"]) and np.array_equal(sample["target"], again["target"])
    difference = (sample["input"] - sample["target"]).numpy() * Normalization().scale
    assert np.abs(difference).mean() > 10.0
    with pytest.raises(ValueError, match="needs a low-dose volume"):
        Stage2Pairs([SlicePair(volume.array)], CropSpec(48, seed=2, normalization=Normalization()), pairs)


def test_a_reference_noise_range_puts_normal_dose_noise_on_the_target_and_low_dose_noise_on_top():
    volume = make_phantom((1, 96, 96))
    pair = SlicePair(volume.array, pixel_mm=volume.spacing[0])
    spec = CropSpec(48, seed=5, normalization=Normalization())

    def crops(reference):
        noise = NoiseConfig(kind="scanner", scanner={"added_noise_hu": [30, 30], "views": [120, 120]},
                            reference_noise_hu=reference)
        return [Stage1Crops([pair], spec, noise)[i] for i in range(4)]

    plain, with_reference = crops([]), crops([15, 15])
    scale = Normalization().scale
    params = [dict(zip(SAMPLE_FIELDS, s["params"].tolist(), strict=True)) for s in with_reference]
    assert all(p["reference_noise_hu"] == pytest.approx(15.0) for p in params)
    for a, b in zip(plain, with_reference, strict=True):
        ndct = a["target"]
        extra = (b["target"] - ndct).numpy() * scale  # the target's own noise
        added = (b["input"] - b["target"]).numpy() * scale
        assert 3.0 < extra.std() < 40.0 and added.std() > 1.5 * extra.std()
        assert abs(np.corrcoef(extra.ravel(), added.ravel())[0, 1]) < 0.2
    with pytest.raises(ValueError, match="reference_noise_hu"):
        crops([10, 5])
