"""Putting the normal-dose CT on the low-dose CT's grid: resampling, optional registration, a check.

The clinical NDCT is another scan: other geometry, other day, the patient moved. Resampling uses
the two geometries (scanner coordinates); registration (SimpleITK, Mattes mutual information,
multi-resolution) then estimates the motion: rigid, affine, or rigid followed by a B-spline.
Without registration, ``misalignment`` estimates the remaining shift so that metrics against a
misaligned reference come with a warning instead of silently measuring anatomy as noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from skimage.registration import phase_cross_correlation

from ..errors import InputError
from ..io.volume import Volume
from ..optional import optional_import

sitk = optional_import("SimpleITK")

REGISTRATIONS = ("none", "rigid", "affine", "bspline")
AIR_HU = -1024.0
MISALIGNED_MM = 1.0  # a remaining shift beyond this gets a warning
BSPLINE_MAX_MM = 15.0  # bound on each B-spline control point's displacement: local motion, not a new pose


@dataclass
class Alignment:
    """The NDCT on the LDCT grid, how it got there, and how well the two agree."""

    volume: Volume
    registration: str
    transform: dict = field(default_factory=dict)
    metric: float | None = None  # final Mattes mutual information (lower is better)
    shift_mm: float | None = None  # remaining shift estimated after resampling/registration
    warnings: list[str] = field(default_factory=list)
    sitk_transform: sitk.Transform | None = None  # LDCT points -> NDCT points

    def to_dict(self) -> dict:
        return {"registration": self.registration, "transform": self.transform, "mattes_mi": self.metric,
                "remaining_shift_mm": self.shift_mm, "warnings": self.warnings}


def resample_onto(moving: Volume, reference: Volume, transform: sitk.Transform | None = None) -> Volume:
    """``moving`` on ``reference``'s grid (linear; air outside), through ``transform`` if given."""
    image = sitk.Resample(moving.to_sitk(), grid_image(reference), transform or sitk.Transform(),
                          sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)
    return Volume.from_sitk(image, metadata={"resampled_from": moving.metadata.get("source", "volume")})


def align(ndct: Volume, ldct: Volume, registration: str = "none", seed: int = 0) -> Alignment:
    """The NDCT on the LDCT grid; registered first when asked; warns when it stays misaligned."""
    if registration not in REGISTRATIONS:
        raise InputError(f"registration must be one of {', '.join(REGISTRATIONS)}; got {registration!r}")
    check_ct(ndct, "NDCT")
    check_ct(ldct, "LDCT")
    if registration == "none":
        result = Alignment(resample_onto(ndct, ldct), "none", {"kind": "identity (scanner coordinates)"})
    else:
        transform, metric = register(ldct, ndct, registration, seed)
        result = Alignment(resample_onto(ndct, ldct, transform), registration, describe_transform(transform), metric,
                           sitk_transform=transform)
    overlap = float(np.mean(result.volume.array > AIR_HU + 1))
    if overlap < 0.5:
        result.warnings.append(f"the NDCT covers only {overlap:.0%} of the LDCT grid; metrics use the overlap only")
    result.shift_mm = misalignment(ldct, result.volume)
    if result.shift_mm > MISALIGNED_MM:
        advice = "register it (--register rigid)" if registration == "none" else "try another registration"
        result.warnings.append(f"the NDCT looks misaligned with the LDCT (remaining shift about {result.shift_mm:.1f} "
                               f"mm); PSNR/SSIM/RMSE then measure anatomy as error: {advice}")
    return result


def register(fixed: Volume, moving: Volume, kind: str = "rigid", seed: int = 0) -> tuple[sitk.Transform, float]:
    """Transform mapping fixed (LDCT) points to moving (NDCT) points, and the final metric value."""
    fixed_image, moving_image = (sitk.Cast(v.to_sitk(), sitk.sitkFloat32) for v in (fixed, moving))
    initial = sitk.CenteredTransformInitializer(fixed_image, moving_image, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.GEOMETRY)
    rigid, metric = _run(fixed_image, moving_image, initial, seed)
    if kind == "rigid":
        return rigid, metric
    if kind == "affine":
        affine = sitk.AffineTransform(3)
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        affine.SetCenter(rigid.GetCenter())
        return _run(fixed_image, moving_image, affine, seed)
    bspline = sitk.BSplineTransformInitializer(fixed_image, [4, 4, 4])
    bspline, metric = _run(fixed_image, moving_image, bspline, seed, after=rigid)
    return sitk.CompositeTransform([rigid, bspline]), metric


def describe_transform(transform: sitk.Transform) -> dict:
    """Translation (mm) and rotation (degrees) of a rigid/affine part, plus the kind and parameters."""
    kind = transform.GetName()
    rigid = transform
    if isinstance(transform, sitk.CompositeTransform):
        rigid = transform.GetNthTransform(0)
    description = {"kind": kind, "parameters": list(transform.GetParameters())[:12]}
    if hasattr(rigid, "GetMatrix"):
        matrix = np.asarray(rigid.GetMatrix()).reshape(3, 3)
        u, _, vt = np.linalg.svd(matrix)  # the rotation nearest to an affine matrix (polar decomposition)
        rotation = u @ vt
        angle = np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1)))
        description.update(translation_mm=[round(v, 3) for v in rigid.GetTranslation()],
                           rotation_deg=round(float(angle), 3), matrix=matrix.round(6).tolist(),
                           center_mm=[round(v, 3) for v in rigid.GetCenter()])
    return description


def misalignment(fixed: Volume, moving_on_grid: Volume) -> float:
    """Remaining shift (mm) between two volumes on one grid, by phase correlation of their bodies.

    Both are clipped to soft tissue and bone (-200..1200 HU) so noise and air barely count; on a
    noisy LDCT this finds shifts of a voxel or more, which is what a warning needs.
    """
    a, b = (np.clip(v.array, -200.0, 1200.0) for v in (fixed, moving_on_grid))
    shift = np.asarray(phase_cross_correlation(a, b, upsample_factor=4, normalization=None)[0], dtype=float)
    if a.shape[0] < 4:
        shift[0] = 0.0  # too few slices to tell a shift along the slice axis
    return float(np.linalg.norm(shift * np.asarray(fixed.spacing[::-1])))


def _run(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, seed: int,
         after: sitk.Transform | None = None) -> tuple[sitk.Transform, float]:
    """Optimise ``initial`` (a B-spline on top of the rigid ``after`` when given); metric = Mattes MI."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.02, seed + 1)  # SimpleITK takes seed 0 as 'use the wall clock'
    method.SetInterpolator(sitk.sitkLinear)
    if after is not None:
        method.SetMovingInitialTransform(after)  # the rigid part stays fixed; the B-spline adds local motion
        method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=60,
                                    maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=500,
                                    lowerBound=-BSPLINE_MAX_MM, upperBound=BSPLINE_MAX_MM)
    else:
        method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=200,
                                                        relaxationFactor=0.5)
        method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    try:
        transform = method.Execute(fixed, moving)
    except RuntimeError as error:
        raise InputError(f"registration failed ({str(error).strip().splitlines()[-1][:160]}); check that both "
                         "volumes show the same anatomy, or use a simpler registration (rigid)") from error
    if isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 1:
        transform = transform.GetNthTransform(0)
    return transform, float(method.GetMetricValue())


def grid_image(volume: Volume) -> sitk.Image:
    """An empty image with ``volume``'s grid: a resampling reference that costs no voxel copy."""
    image = sitk.Image([int(n) for n in volume.array.shape[::-1]], sitk.sitkUInt8)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(volume.direction.ravel()))
    return image


def check_ct(volume: Volume, what: str) -> None:
    """Refuse NaN and volumes that are not CT in HU (an MR or PET volume has no air near -1000 HU)."""
    if not np.isfinite(volume.array).all():
        raise InputError(f"the {what} holds NaN or infinite values; give a volume of finite HU")
    lowest = float(volume.array.min())
    if lowest > -500.0:
        raise InputError(f"the {what} does not look like CT in HU (lowest value {lowest:g}; CT has air near -1000 HU): "
                         "another modality (MR, PET?) or values not rescaled to HU; give the CT series")
