"""Fuzz the DICOM reader: mutate the headers of a real CT series and check every outcome.

Every outcome must be a correct volume (finite positive spacing, orthonormal direction, finite
HU, no file dropped without a note) or one ``InputError``; anything else is a crash. Used by
``test_dicom_fuzz.py`` (300 seeded cases) and on its own for longer campaigns:

    python Testing/fuzz_dicom.py --cases 1000 [--seed N]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from LDCTDenoiseLib.errors import InputError
from LDCTDenoiseLib.io import Volume, read_volume, write_dicom_series

MUTATED_TAGS = ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope",
                "RescaleIntercept", "Rows", "Columns", "BitsAllocated", "GantryDetectorTilt", "SliceThickness",
                "Modality", "SeriesInstanceUID", "NumberOfFrames", "ImageType", "SOPClassUID", "PixelRepresentation",
                "SamplesPerPixel", "PixelData"]
VALUES = [[], [1], [0, 0], [0, 0, 0, 0], "nan", "inf", "-inf", 0, "-0", -1, 1e308, 1e-320, 2147483647, "garbage",
          [1, 0, 0, 0, 1, 0], [0, 1, 0, 1, 0, 0], [1, 0, 0, 0, 0, 1], [0.7, 0.7], "", "1.2.3", [2, 0, 0, 0, 2, 0]]
PIXEL_DATA = [b"", b"\0\0", b"\0" * 1000]  # empty, a fragment, a truncated image
READ_TAGS = {"ImagePositionPatient": b"\x20\x00\x32\x00", "ImageOrientationPatient": b"\x20\x00\x37\x00",
             "PixelSpacing": b"\x28\x00\x30\x00", "RescaleSlope": b"\x28\x00\x53\x10",
             "Rows": b"\x28\x00\x10\x00", "SamplesPerPixel": b"\x28\x00\x02\x00"}  # explicit VR little endian
SYNTAXES = ["1.2.3.4.5", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.50"]


def make_source(folder: Path, shared_ct: Path) -> Path:
    """Three slices of a real CT series re-written as DICOM (headers derived from the scanner's), or a
    synthetic series when the shared data is absent."""
    real = shared_ct / "lidc-idri" / "LIDC-IDRI-0003"
    if real.is_dir():
        volume = read_volume(real)
        metadata = {**volume.metadata, "dicom_files": volume.metadata["dicom_files"][3:6]}
        volume = Volume(volume.array[3:6, 128:384, 128:384].copy(), spacing=volume.spacing, origin=volume.origin,
                        direction=volume.direction, metadata=metadata)
    else:
        rng = np.random.default_rng(0)
        volume = Volume(np.rint(rng.normal(0, 200, (3, 40, 48))).astype(np.float32), spacing=(0.7, 0.8, 2.5))
    write_dicom_series(volume, folder)
    return folder


def mutate(ds: pydicom.Dataset, rng: np.random.Generator) -> str:
    """One random edit: a transfer syntax, a deleted tag, or a hostile value; its description."""
    if rng.random() < 0.1:
        syntax = str(rng.choice(SYNTAXES))
        ds.file_meta.TransferSyntaxUID = syntax
        return f"TransferSyntaxUID={syntax}"
    tag = str(rng.choice(MUTATED_TAGS))
    if rng.random() < 0.25:
        if tag in ds:
            delattr(ds, tag)
        return f"del {tag}"
    value = VALUES[int(rng.integers(len(VALUES)))]
    if tag == "PixelData":
        value = PIXEL_DATA[int(rng.integers(len(PIXEL_DATA)))]
    try:
        setattr(ds, tag, value)
        _writable(ds)
    except Exception:  # pydicom refuses it for the tag's VR: write the bytes a broken exporter would
        text = "\\".join(map(str, value)) if isinstance(value, list) else str(value)
        raw = text.encode() + b" " * (len(text) % 2)
        element_tag = Tag(tag_for_keyword(tag))
        ds[element_tag] = RawDataElement(element_tag, dictionary_VR(element_tag), len(raw), raw, 0, False, True)
        return f"{tag}=raw {text!r}"
    return f"{tag}={value!r}"


def corrupt_vr(path: Path, rng: np.random.Generator) -> str:
    """An unknown VR written into a tag the reader reads (pydicom will not write one: the bytes are patched)."""
    tag = str(rng.choice(sorted(READ_TAGS)))
    data = path.read_bytes()
    at = data.find(READ_TAGS[tag], 132)
    if at < 0:
        return f"VR of {tag}: absent"
    path.write_bytes(data[:at + 4] + b"QQ" + data[at + 6:])
    return f"VR of {tag}=QQ"


def _writable(ds: pydicom.Dataset) -> None:
    ds.save_as(io.BytesIO())


def outcome(folder: Path, files: int) -> str:
    """refused, accepted, or a description of what is wrong (a crash or a bad volume)."""
    try:
        volume = read_volume(folder)
    except InputError:
        return "refused"
    except Exception as error:  # what the campaign looks for
        return f"crash: {type(error).__name__}: {error}".splitlines()[0][:160]
    direction = np.asarray(volume.direction)
    if not (np.all(np.isfinite(volume.spacing)) and min(volume.spacing) > 0 and np.all(np.isfinite(volume.origin))):
        return f"bad: spacing {volume.spacing}, origin {volume.origin}"
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-2):
        return "bad: direction not orthonormal"
    if not np.all(np.isfinite(volume.array)):
        return "bad: non-finite HU"
    if np.ptp(volume.array) < 1.0:
        return "bad: a constant volume (the source has anatomy)"
    if volume.array.shape[0] != files and not volume.metadata.get("notes"):
        return "bad: files dropped without a note"
    return "accepted"


def fuzz(source: Path, work: Path, cases: int, seed: int, failures: list | None = None) -> Counter:
    """Run ``cases`` mutations of ``source``; raises AssertionError at the first crash or bad volume unless
    ``failures`` collects them."""
    rng = np.random.default_rng(seed)
    files = sorted(source.iterdir())
    counts: Counter = Counter()
    for case in range(cases):
        folder = work / f"case-{case}"
        shutil.copytree(source, folder)
        targets = files if rng.random() < 0.5 else [files[int(rng.integers(len(files)))]]
        labels = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for target in targets:
                    ds = pydicom.dcmread(folder / target.name)
                    labels += [mutate(ds, rng) for _ in range(int(rng.integers(1, 4)))]
                    ds.save_as(folder / target.name)
                    if rng.random() < 0.1:
                        labels.append(corrupt_vr(folder / target.name, rng))
        except Exception:  # pydicom refuses to write this value with this VR: no file can hold it
            counts["unwritable"] += 1
            shutil.rmtree(folder)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = outcome(folder, len(files))
        shutil.rmtree(folder)
        kind = result.split(":")[0]
        counts[kind] += 1
        if kind in ("crash", "bad"):
            if failures is None:
                raise AssertionError(f"case {case} {labels}: {result}")
            failures.append((case, labels, result))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ct")
    args = parser.parse_args()
    failures: list = []
    with tempfile.TemporaryDirectory() as work:
        source = make_source(Path(work) / "source", args.shared)
        try:
            counts = fuzz(source, Path(work), args.cases, args.seed, failures)
        except Exception:
            traceback.print_exc()
            return 1
    print(f"{args.cases} cases, seed {args.seed}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for case, labels, result in failures[:20]:
        print(f"  case {case} {labels}: {result}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
