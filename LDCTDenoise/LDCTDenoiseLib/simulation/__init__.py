"""Test and training data without a scanner: a phantom and low-dose noise insertion."""

from .noise import ProjectionNoise, add_gaussian_noise, projection_noise_hu, simulate_low_dose
from .phantom import make_phantom

__all__ = ["ProjectionNoise", "add_gaussian_noise", "make_phantom", "projection_noise_hu", "simulate_low_dose"]
