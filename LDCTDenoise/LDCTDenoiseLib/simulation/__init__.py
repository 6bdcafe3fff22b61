"""Test and training data without a scanner: a phantom and low-dose noise insertion."""

from .noise import ProjectionNoise, add_gaussian_noise, projection_noise_hu, simulate_low_dose
from .phantom import make_phantom
from .scanner import FILTERS, ScannerNoise, ScannerRanges, SliceProjection, scanner_noise_hu

__all__ = [
    "FILTERS",
    "ProjectionNoise",
    "ScannerNoise",
    "ScannerRanges",
    "SliceProjection",
    "add_gaussian_noise",
    "make_phantom",
    "projection_noise_hu",
    "scanner_noise_hu",
    "simulate_low_dose",
]
