"""LDCTDenoise core: generator, weights, inference, I/O and low-dose simulation.

Plain numpy/torch/SimpleITK/pydicom; nothing here imports slicer, qt or vtk.
"""

__version__ = "0.1.0"
