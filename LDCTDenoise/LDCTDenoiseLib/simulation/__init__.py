"""Test and training data without a scanner: a phantom and low-dose noise insertion.

The noise simulators need torch; the phantom does not. Names load on first use (PEP 562), so the
phantom works where torch is absent (Slicer's GUI process before the first run, the Python 3.9 CI).
"""

from importlib import import_module

_HOMES = {
    "FILTERS": "scanner",
    "ScannerNoise": "scanner",
    "ScannerRanges": "scanner",
    "SliceProjection": "scanner",
    "scanner_noise_hu": "scanner",
    "ProjectionNoise": "noise",
    "add_gaussian_noise": "noise",
    "projection_noise_hu": "noise",
    "simulate_low_dose": "noise",
    "make_phantom": "phantom",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOMES[name]}", __name__), name)
