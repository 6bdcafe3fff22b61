"""Scanner-realistic low-dose noise: randomised filter, views, detector, dose, bowtie, tube-current modulation.

A model that meets one noise recipe in training does not transfer to scanners with another
reconstruction filter, view count, pixel size or dose, nor to the streaks of photon starvation.
This simulator draws all of these per sample (``ScannerRanges.draw``) and inserts the noise the
way the AAPM/Mayo low-dose data was made: in the projection domain, through FBP, added to the
normal-dose image (``LD = ND + FBP(noisy) - FBP(clean)`` = ``ND + FBP(noisy - clean)``).

Geometry: parallel beam over a full rotation (a scanner's fan-beam data rebinned), the slice's
own pixel size and field of view, a detector of ``detector_mm`` bins at the isocentre covering
the whole image. Physics per ray: counts ~ Poisson(I0 * bowtie(u) * modulation(view) * exp(-p))
plus Gaussian electronic noise, clipped at ``MIN_COUNTS`` before the log; where counts are few
(long paths through shoulders or pelvis, edges of a strong bowtie, views the modulation did not
raise) the log of clipped counts makes the streaks of real low-dose scans.

The dose is set by what a reader sees: ``added_noise_hu``, the standard deviation of the added
noise at the body centre. I0 is solved for it from the FBP variance of the sinogram noise
(Poisson ``exp(p)/I`` plus electronic ``s_e^2 exp(2p)/I^2``), so a draw of 5 to 150 HU means the
same on a head and on a pelvis.

Speed: the line integrals are computed at about 2 mm (they set the noise variance, not the
image; ``SliceProjection`` keeps them for reuse), the noise is drawn on the full sinogram,
filtered by FFT and back-projected only onto the pixels asked for (a training crop costs a
fraction of a whole slice). Torch on the CPU.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")
MU_WATER_PER_MM = 0.0192  # linear attenuation of water at an effective ~70 keV
MIN_COUNTS = 1.0  # counts are clipped here before the log (as scanners do before their own corrections)
SCAN_FOV_RADIUS_MM = 250.0  # the bowtie's reference radius: a 50 cm scan field of view
PROJECTION_PIXEL_MM = 2.0  # resolution of the line integrals that set the noise variance
PROJECTION_VIEWS = 90  # views over half a rotation for those line integrals (2 degrees; interpolated)
BODY_HU = -500.0  # the body centre is the centroid of pixels above this


@dataclass(frozen=True)
class ScannerNoise:
    """One scan's noise recipe; every field is recorded with what it produced."""

    added_noise_hu: float = 40.0  # std of the added noise at the body centre
    filter: str = "ramp"
    cutoff: float = 1.0  # filter cutoff, fraction of the detector's Nyquist frequency
    views: int = 720  # per full rotation
    detector_mm: float = 0.0  # bin width at the isocentre; 0 = the slice's pixel size
    electronic_std: float = 10.0  # counts per bin and view
    bowtie: float = 1.0  # line-integral units of extra attenuation at the edge of a 50 cm scan field
    modulation: float = 0.5  # 0 = constant tube current, 1 = flux ~ sqrt(exp(p_max)) per view

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.added_noise_hu < 1000 or not math.isfinite(self.added_noise_hu):
            problems.append(f"added_noise_hu must lie in [0, 1000) HU; got {self.added_noise_hu}")
        if self.filter not in FILTERS:
            problems.append(f"filter must be one of {', '.join(FILTERS)}; got {self.filter!r}")
        if not 0.1 <= self.cutoff <= 1.0:
            problems.append(f"cutoff must lie in [0.1, 1] (fraction of Nyquist); got {self.cutoff}")
        if not 16 <= self.views <= 5000:
            problems.append(f"views must lie in [16, 5000]; got {self.views}")
        if self.detector_mm < 0 or self.electronic_std < 0 or self.bowtie < 0 or not 0 <= self.modulation <= 1:
            problems.append("detector_mm, electronic_std and bowtie must be >= 0 and modulation in [0, 1]")
        if problems:
            raise InputError("; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ScannerRanges:
    """The documented ranges each training sample's ``ScannerNoise`` is drawn from.

    Noise is log-uniform (as many light as heavy doses); views log-uniform; the filter uniform
    over ``filters``; the rest uniform. The defaults span clinical scanners: sharp (ramp) to
    smooth (Hann at half Nyquist) kernels, 360 to 1200 views, detector bins 0.5 to 1.2 mm,
    weak to strong bowties, no to full angular modulation.
    """

    added_noise_hu: tuple[float, float] = (5.0, 150.0)
    filters: tuple[str, ...] = FILTERS
    cutoff: tuple[float, float] = (0.5, 1.0)
    views: tuple[int, int] = (360, 1200)
    detector_mm: tuple[float, float] = (0.5, 1.2)
    electronic_std: tuple[float, float] = (0.0, 30.0)
    bowtie: tuple[float, float] = (0.0, 3.0)
    modulation: tuple[float, float] = (0.0, 1.0)

    def draw(self, rng: np.random.Generator) -> ScannerNoise:
        log_uniform = lambda low, high: float(np.exp(rng.uniform(np.log(low), np.log(high))))  # noqa: E731
        return ScannerNoise(
            added_noise_hu=log_uniform(*self.added_noise_hu),
            filter=str(self.filters[int(rng.integers(len(self.filters)))]),
            cutoff=float(rng.uniform(*self.cutoff)),
            views=int(round(log_uniform(*self.views))),
            detector_mm=float(rng.uniform(*self.detector_mm)),
            electronic_std=float(rng.uniform(*self.electronic_std)),
            bowtie=float(rng.uniform(*self.bowtie)),
            modulation=float(rng.uniform(*self.modulation)),
        )

    @classmethod
    def from_dict(cls, values: dict) -> ScannerRanges:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise InputError(f"unknown scanner range {sorted(unknown)[0]}; known: {', '.join(sorted(known))}")
        return cls(**{k: tuple(v) for k, v in values.items()})


def scanner_noise_hu(
    hu: np.ndarray,
    pixel_mm: float,
    settings: ScannerNoise,
    rng: np.random.Generator,
    region: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """The HU noise that lowers one normal-dose slice to ``settings``; only ``region`` if given.

    ``region`` is (top, left, height, width) in pixels of ``hu``: the noise of those pixels is the
    same as in the whole-slice result for the same random stream.
    """
    hu = np.asarray(hu, dtype=np.float32)
    top, left, height, width = region if region is not None else (0, 0, *hu.shape)
    if top < 0 or left < 0 or height < 1 or width < 1 or top + height > hu.shape[0] or left + width > hu.shape[1]:
        raise InputError(f"region {region} does not lie inside the slice of shape {hu.shape}")
    projection = SliceProjection.of(hu, pixel_mm)
    rows_mm = (np.arange(top, top + height) - (hu.shape[0] - 1) / 2) * pixel_mm
    columns_mm = (np.arange(left, left + width) - (hu.shape[1] - 1) / 2) * pixel_mm
    return projection.noise_hu(settings, rng, rows_mm, columns_mm, default_bin_mm=pixel_mm)


@dataclass(frozen=True)
class SliceProjection:
    """What noise insertion needs of a slice, in scanner millimetres (independent of its pixel grid).

    Line integrals over half a rotation at about 2 mm, the radius the detector must cover and the
    body centre. Computing it is most of a slice's cost; training reuses it for every crop of the
    slice, at any pixel size.
    """

    half_sinogram: torch.Tensor  # (PROJECTION_VIEWS, samples) over [0, pi), centred detector
    spacing_mm: float
    radius_mm: float
    body_centre_mm: tuple[float, float]  # (row, column) from the image centre
    fov_radius_mm: float = math.inf  # the reconstruction circle, where the slice is padded outside it

    @classmethod
    def of(cls, hu: np.ndarray, pixel_mm: float) -> SliceProjection:
        hu = np.asarray(hu, dtype=np.float32)
        if hu.ndim != 2 or min(hu.shape) < 8:
            raise InputError(f"a slice is a 2-D array of at least 8 x 8 pixels; got shape {hu.shape}")
        if not (math.isfinite(pixel_mm) and pixel_mm > 0):
            raise InputError(f"pixel size must be a positive number of mm; got {pixel_mm}")
        half, spacing = coarse_sinogram(hu, pixel_mm)
        return cls(half, spacing, 0.5 * math.hypot(*hu.shape) * pixel_mm, body_centre(hu, pixel_mm),
                   reconstruction_radius_mm(hu, pixel_mm))

    def noise_hu(self, settings: ScannerNoise, rng: np.random.Generator, rows_mm: np.ndarray,
                 columns_mm: np.ndarray, default_bin_mm: float = 1.0) -> np.ndarray:
        """Noise in HU at the pixel centres ``rows_mm`` x ``columns_mm`` (mm from the image centre)."""
        (noise,) = self.noise_at_levels_hu(settings, (settings.added_noise_hu,), rng, rows_mm, columns_mm,
                                           default_bin_mm)
        return noise

    def noise_at_levels_hu(self, settings: ScannerNoise, levels_hu: tuple[float, ...], rng: np.random.Generator,
                           rows_mm: np.ndarray, columns_mm: np.ndarray, default_bin_mm: float = 1.0,
                           device: torch.device | str | None = None) -> list[np.ndarray]:
        """Independent noise images of one scanner (filter, views, bowtie, ...) at several doses.

        Each level is the noise std at the body centre, as ``added_noise_hu``; the geometry and
        line integrals are computed once. Two levels give a low-dose scan and a normal-dose scan
        of the same scanner, each with noise of its own. ``device`` runs the torch work there (a
        GPU: another random generator, so other draws than the CPU's for the same ``rng``).
        """
        projection = self if device is None else dataclasses.replace(self, half_sinogram=self.half_sinogram.to(device))
        inside = np.hypot(np.asarray(rows_mm)[:, None], np.asarray(columns_mm)[None, :]) <= self.fov_radius_mm
        geometry = None
        images = []
        for level in levels_hu:
            if level == 0:
                images.append(np.zeros(inside.shape, np.float32))
                continue
            at_level = dataclasses.replace(settings, added_noise_hu=float(level))
            if geometry is None:
                geometry = Scan.of(projection, at_level, settings.detector_mm or default_bin_mm)
            scan = geometry.at_dose(at_level, self.body_centre_mm)
            delta_mu = scan.backproject(scan.filtered(scan.noise_sinogram(rng)), rows_mm, columns_mm)
            images.append((1000.0 / MU_WATER_PER_MM * delta_mu * inside).astype(np.float32))
        return images


@dataclass
class Scan:
    """One slice's sinogram geometry, line integrals and incident flux, ready to draw noise."""

    settings: ScannerNoise
    angles: torch.Tensor  # (views,) radians over a full rotation
    detector: torch.Tensor  # (bins,) mm from the isocentre
    line_integrals: torch.Tensor  # (views, bins) of the clean slice
    flux: torch.Tensor  # (views, bins) incident photons per bin and view

    @classmethod
    def of(cls, projection: SliceProjection, settings: ScannerNoise, bin_mm: float) -> Scan:
        bins = 2 * int(math.ceil(projection.radius_mm / bin_mm)) + 1
        device = projection.half_sinogram.device
        detector = (torch.arange(bins, dtype=torch.float64, device=device) - bins // 2) * bin_mm
        angles = torch.arange(settings.views, dtype=torch.float64, device=device) * (2 * math.pi / settings.views)
        p = line_integrals(projection, angles, detector)
        relative = _bowtie(detector, settings.bowtie)[None, :] * _modulation(p, settings.modulation)[:, None]
        unit = cls(settings, angles, detector, p, relative)  # flux per unit I0
        return dataclasses.replace(unit, flux=relative * unit.incident_for(projection.body_centre_mm))

    def at_dose(self, settings: ScannerNoise, centre_mm: tuple[float, float]) -> Scan:
        """This scan's geometry with the flux solved for ``settings.added_noise_hu`` (same recipe otherwise)."""
        if settings == self.settings:
            return self
        if dataclasses.replace(settings, added_noise_hu=self.settings.added_noise_hu) != self.settings:
            raise ValueError("at_dose changes the dose only; the rest of the recipe must be this scan's")
        unit = dataclasses.replace(self, settings=settings, flux=self.flux / float(self.flux.max()))
        return dataclasses.replace(unit, flux=unit.flux * unit.incident_for(centre_mm))

    def incident_for(self, centre_mm: tuple[float, float]) -> float:
        """I0 that gives ``added_noise_hu`` at the body centre (FBP variance of the log noise)."""
        s = self.settings
        target = (s.added_noise_hu * MU_WATER_PER_MM / 1000.0) ** 2
        poisson = self._variance_at(torch.exp(self.line_integrals) / self.flux, centre_mm)
        electronic = s.electronic_std**2 * self._variance_at(torch.exp(2 * self.line_integrals) / self.flux**2,
                                                             centre_mm)
        return float((poisson + math.sqrt(poisson**2 + 4 * target * electronic)) / (2 * target))

    def noise_sinogram(self, rng: np.random.Generator) -> torch.Tensor:
        """log(I / counts) - p: Poisson photons, Gaussian electronic noise, clipped counts.

        The log's second-order bias ``(lambda + s_e^2) / (2 lambda^2)`` is subtracted, as a scanner's
        low-signal calibration would: the image keeps its CT numbers and its streaks.
        """
        generator = torch.Generator(device=self.flux.device).manual_seed(int(rng.integers(2**62)))
        expected = self.flux * torch.exp(-self.line_integrals)
        counts = torch.poisson(expected, generator=generator)
        counts += self.settings.electronic_std * torch.randn(expected.shape, generator=generator, dtype=counts.dtype,
                                                             device=counts.device)
        bias = (expected + self.settings.electronic_std**2) / (2 * expected**2)
        return torch.log(self.flux / counts.clamp_min(MIN_COUNTS)) - self.line_integrals - bias.clamp_max(1.0)

    def filtered(self, sinogram: torch.Tensor) -> torch.Tensor:
        """Each view convolved with the reconstruction filter (mm^-1 per line-integral unit)."""
        bins = sinogram.shape[1]
        size = 1 << int(math.ceil(math.log2(2 * bins)))
        response = fourier_filter(size, self.settings.filter, self.settings.cutoff, self._bin_mm, sinogram.device)
        spectrum = torch.fft.rfft(sinogram, n=size, dim=1) * response
        return torch.fft.irfft(spectrum, n=size, dim=1)[:, :bins]

    def backproject(self, filtered: torch.Tensor, rows_mm: np.ndarray, columns_mm: np.ndarray) -> np.ndarray:
        """FBP's sum over views at the given pixel centres (mm from the image centre)."""
        device = filtered.device
        y = torch.as_tensor(rows_mm, dtype=torch.float32, device=device)[:, None]
        x = torch.as_tensor(columns_mm, dtype=torch.float32, device=device)[None, :]
        image = torch.zeros((len(rows_mm), len(columns_mm)), dtype=torch.float32, device=device)
        first = float(self.detector[0])
        chunk = max(1, 4_000_000 // image.numel())
        for start in range(0, len(self.angles), chunk):
            angles = self.angles[start : start + chunk].to(torch.float32)
            views = filtered[start : start + chunk].to(torch.float32)
            u = (x[None] * torch.cos(angles)[:, None, None] + y[None] * torch.sin(angles)[:, None, None])
            position = ((u - first) / self._bin_mm).reshape(len(angles), -1)
            image += _interpolate_rows(views, position).sum(0).reshape(image.shape)
        return (image * (math.pi / len(self.angles))).cpu().numpy()

    @property
    def _bin_mm(self) -> float:
        return float(self.detector[1] - self.detector[0])

    def _variance_at(self, ray_variance: torch.Tensor, centre_mm: tuple[float, float]) -> float:
        """Variance of the FBP image near one point for independent rays of ``ray_variance``.

        Per view: the filtered sinogram's variance ``V = var * c^2`` and neighbour covariance
        ``C = var * (c c_+1)``; the back-projection's linear interpolation at a fraction ``w`` of a
        bin gives ``(1-w)^2 V_d + w^2 V_d+1 + 2 w (1-w) C_d``, averaged over ``w`` (pixels fall
        anywhere between bins): ``(V_d + V_d+1 + C_d) / 3``.
        """
        bins = ray_variance.shape[1]
        size = 1 << int(math.ceil(math.log2(2 * bins)))
        response = fourier_filter(size, self.settings.filter, self.settings.cutoff, self._bin_mm, ray_variance.device)
        kernel = torch.fft.irfft(response, n=size)
        spectrum = torch.fft.rfft(ray_variance, n=size, dim=1)
        variance, covariance = (torch.fft.irfft(spectrum * torch.fft.rfft(k, n=size), n=size, dim=1)[:, :bins]
                                for k in (kernel**2, kernel * torch.roll(kernel, -1)))
        row, column = centre_mm
        u = column * torch.cos(self.angles) + row * torch.sin(self.angles)
        lower = ((u - float(self.detector[0])) / self._bin_mm).floor().long().clamp(0, bins - 2)[:, None]
        pick = lambda values, index: torch.gather(values, 1, index)  # noqa: E731
        at_point = (pick(variance, lower) + pick(variance, lower + 1) + pick(covariance, lower)) / 3
        return float(at_point.sum() * (math.pi / len(self.angles)) ** 2)


def fourier_filter(size: int, name: str, cutoff: float, bin_mm: float,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """rfft response of the band-limited ramp (Kak and Slaney's spatial kernel) times a window."""
    n = torch.cat([torch.arange(0, size // 2 + 1), torch.arange(size // 2 - 1, 0, -1)]).to(torch.float64)
    kernel = torch.zeros(size, dtype=torch.float64)
    kernel[0] = 0.25
    odd = n % 2 == 1
    kernel[odd] = -1.0 / (math.pi * n[odd]) ** 2
    ramp = torch.fft.rfft(kernel).real / bin_mm  # q = (1/tau) h_unit * p (Kak and Slaney, eq. 61)
    x = torch.linspace(0.0, 1.0, size // 2 + 1, dtype=torch.float64) / cutoff  # fraction of the cutoff
    window = {
        "ramp": torch.ones_like(x),
        "shepp-logan": torch.special.sinc(x / 2),
        "cosine": torch.cos(math.pi * x / 2),
        "hamming": 0.54 + 0.46 * torch.cos(math.pi * x),
        "hann": 0.5 + 0.5 * torch.cos(math.pi * x),
    }[name]
    return (ramp * torch.where(x <= 1.0, window, torch.zeros_like(x))).to(device)


def line_integrals(projection: SliceProjection, angles: torch.Tensor, detector: torch.Tensor) -> torch.Tensor:
    """Attenuation line integrals p(angle, u), interpolated from the slice's coarse sinogram.

    The ray of angle t at detector position u is {x cos t + y sin t = u}; x runs along columns and
    y along rows, both in mm from the image centre. They set the noise variance, so a coarse grid
    (a few per cent of error at bone edges) is enough.
    """
    half = projection.half_sinogram
    full = torch.cat([half, half.flip(1), half[:1]])  # p(t + pi, u) = p(t, -u); closes the circle at 2 pi
    view_position = angles / (2 * math.pi) * (2 * PROJECTION_VIEWS)
    bin_position = detector / projection.spacing_mm + (half.shape[1] - 1) / 2
    by_view = _interpolate_rows(full.T.contiguous(), view_position[None, :].expand(half.shape[1], -1)).T
    p = _interpolate_rows(by_view.contiguous(), bin_position[None, :].expand(len(angles), -1))
    return p.to(torch.float64).clamp_min(0.0)


def coarse_sinogram(hu: np.ndarray, pixel_mm: float) -> tuple[torch.Tensor, float]:
    """(p over ``PROJECTION_VIEWS`` angles of half a rotation x centred detector samples, sample mm).

    The slice is averaged down to about ``PROJECTION_PIXEL_MM``, then each view rotates it (bilinear)
    onto a square grid that covers its diagonal and sums along the rays.
    """
    mu = np.clip(MU_WATER_PER_MM * (1.0 + hu.astype(np.float32) / 1000.0), 0.0, None)
    factor = max(1, int(round(PROJECTION_PIXEL_MM / pixel_mm)))
    image = torch.from_numpy(mu)[None, None]
    image = F.avg_pool2d(image, factor, ceil_mode=True) if factor > 1 else image
    coarse_mm = pixel_mm * factor
    rows, columns = image.shape[2:]
    side = int(math.ceil(math.hypot(rows, columns))) | 1  # odd: a sample at the centre
    theta = torch.arange(PROJECTION_VIEWS, dtype=torch.float32) * (math.pi / PROJECTION_VIEWS)
    cos, sin = torch.cos(theta), torch.sin(theta)
    # sample (i along the ray t, j along the detector u) -> (x, y) in units of each axis' half-extent
    steps = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * (2.0 / side)
    t, u = steps[:, None].expand(side, side).reshape(-1), steps[None, :].expand(side, side).reshape(-1)
    x = (u[None] * cos[:, None] - t[None] * sin[:, None]) * (side / columns)
    y = (u[None] * sin[:, None] + t[None] * cos[:, None]) * (side / rows)
    grids = torch.stack([x, y], dim=-1).reshape(PROJECTION_VIEWS, side, side, 2)
    projections = []
    for start in range(0, PROJECTION_VIEWS, 45):
        grid = grids[start : start + 45]
        values = F.grid_sample(image.expand(len(grid), -1, -1, -1), grid, align_corners=False)
        projections.append(values[:, 0].sum(1) * coarse_mm)
    return torch.cat(projections), coarse_mm


def body_centre(hu: np.ndarray, pixel_mm: float) -> tuple[float, float]:
    """(row, column) in mm from the image centre of the pixels above -500 HU (the image centre if none)."""
    rows, columns = np.nonzero(hu > BODY_HU)
    if rows.size == 0:
        return 0.0, 0.0
    centre = (np.asarray(hu.shape) - 1) / 2
    return (float(rows.mean()) - centre[0]) * pixel_mm, (float(columns.mean()) - centre[1]) * pixel_mm


def reconstruction_radius_mm(hu: np.ndarray, pixel_mm: float) -> float:
    """The reconstruction circle's radius where the scanner padded the slice outside it, else infinity.

    Scanners fill the corners outside the inscribed circle with one value at or below -1024 HU;
    no noise belongs there.
    """
    corners = hu[[0, 0, -1, -1], [0, -1, 0, -1]]
    if (corners == hu.min()).all() and hu.min() <= -1024.0:
        return 0.5 * min(hu.shape) * pixel_mm
    return math.inf


def _bowtie(detector: torch.Tensor, strength: float) -> torch.Tensor:
    """Relative flux behind the bowtie: exp(-strength (u / R)^2), flat beyond the scan field."""
    reach = (detector / SCAN_FOV_RADIUS_MM).clamp(-1.0, 1.0)
    return torch.exp(-strength * reach**2)


def _modulation(p: torch.Tensor, strength: float) -> torch.Tensor:
    """Relative tube current per view, mean 1: exp(strength * p_max / 2), the near-optimal sqrt rule."""
    p_max = torch.quantile(p, 0.98, dim=1)
    current = torch.exp(strength * 0.5 * (p_max - p_max.mean()))
    return current / current.mean()


def _interpolate_rows(values: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of each row of ``values`` at fractional ``position`` (zero outside); float32."""
    rows, bins = values.shape
    x = position.to(torch.float32) * (2.0 / max(bins - 1, 1)) - 1.0
    y = (torch.arange(rows, dtype=torch.float32, device=x.device) * (2.0 / max(rows - 1, 1)) - 1.0)[:, None]
    y = y.expand_as(x)
    grid = torch.stack([x, y], dim=-1)[None]
    return F.grid_sample(values.to(torch.float32)[None, None], grid, align_corners=True)[0, 0]
