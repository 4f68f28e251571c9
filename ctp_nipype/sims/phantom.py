"""A digital brain phantom: a 4D CT perfusion slab with known truth.

The anatomy comes from the MNI ICBM152 2009a grey- and white-matter
probability maps and brain mask that nilearn ships inside its wheel (they
load offline, read by :func:`ctp_nipype.templates.load_mni152`), averaged over the voxels of a CT-like grid (thick axial slices
through the basal ganglia and lateral ventricles). Around the brain lie a rim
of CSF, a skull ring (1000 HU), the scalp and, behind the head, a head holder,
so that brain masking matters.

The curves are made with the building blocks of :mod:`.simulate` and the
constants of the conventions: for each perfused tissue class (grey matter,
white matter, ischemic core, penumbra) the global AIF is delayed and
dispersed into the class's local AIF, and the tissue concentration is
``C = Ca_local (x) K`` with ``K = (rho / kappa_H) * CBF / 6000 * r`` (the
trapezoidal convolution of :func:`.convolution.convolve`, on the fine grid
``simulate.FINE_DT``), sampled at the frame times. One curve is computed per
class; a smooth random field scales CBF inside a class (MTT fixed per class),
so the tissue curve of a voxel is the class curve times ``CBF_voxel /
CBF_class``: vectorised over voxels, with a loop over four classes only.

Label codes (:class:`PhantomLabel`)::

    0 background (air)        6 ischemic core
    1 grey matter             7 penumbra
    2 white matter            8 skull
    3 CSF                     9 extracranial soft tissue (scalp)
    4 artery                 10 head holder
    5 vein (superior sagittal sinus)

Truth (all in the reference head position, frame 0):

* CBF [ml/100 g/min], CBV [ml/100 g], MTT [s] = 60 CBV / CBF, delay [s]
  (shift of the local AIF relative to the global AIF) and dispersion [s]
  (``T_A`` of the exponential vascular transport function) in the perfused
  classes (1, 2, 6, 7); zero elsewhere.
* CBV is the full (infinite-window) ``CBF * MTT / 60``. The bolus, the
  residue shape (gamma transit times of shape 3 by default) and the 60 s
  window are chosen so that the part of each tissue curve's area that falls
  after the last frame is below 0.5% (the slowest class, the penumbra, loses
  at most 0.35%), so the CBV measured from the curve areas in the window,
  ``100 kappa_H / rho * integral(C) / integral(Ca)``, equals the truth within 1%.
* The artery voxels hold a fraction ``artery_partial_volume`` (default 0.5)
  of arterial blood and CSF for the rest: their concentration is exactly
  ``artery_partial_volume`` times the true global AIF. The vein voxels are
  pure venous blood: their concentration, the VOF, is the global AIF delayed
  by ``venous_delay_s`` and dispersed with ``T_A = venous_dispersion_s``,
  which keeps the AIF's area; so scaling the partial-volume AIF to the VOF's
  area (the VOF correction) recovers the true AIF.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache

import numpy as np
from scipy import ndimage

from ..perfusion.constants import KAPPA_H, RHO
from ..perfusion.maps import cbv_from_areas
from ..perfusion.convolution import convolve
from ..perfusion.motion import apply_rigid
from .simulate import (
    FINE_DT,
    delay_curves,
    disperse,
    flow_scaled_residue,
    gamma_variate_aif,
    residue_function,
    sample_curves,
)
from ..perfusion.timing import TimingError, check_frame_times


class PhantomLabel(IntEnum):
    """Integer codes of the phantom's label map."""

    BACKGROUND = 0
    GREY_MATTER = 1
    WHITE_MATTER = 2
    CSF = 3
    ARTERY = 4
    VEIN = 5
    CORE = 6
    PENUMBRA = 7
    SKULL = 8
    SOFT_TISSUE = 9
    HEAD_HOLDER = 10


#: labels inside the skull (the brain mask a preprocessing step should find)
INTRACRANIAL_LABELS = (
    PhantomLabel.GREY_MATTER,
    PhantomLabel.WHITE_MATTER,
    PhantomLabel.CSF,
    PhantomLabel.ARTERY,
    PhantomLabel.VEIN,
    PhantomLabel.CORE,
    PhantomLabel.PENUMBRA,
)

#: labels with a tissue curve (and truth CBF, CBV, MTT)
PERFUSED_LABELS = (
    PhantomLabel.GREY_MATTER,
    PhantomLabel.WHITE_MATTER,
    PhantomLabel.CORE,
    PhantomLabel.PENUMBRA,
)


@dataclass(frozen=True)
class TissueClass:
    """Perfusion of one tissue class.

    Attributes
    ----------
    cbf : float
        ml/100 g/min.
    cbv : float
        ml/100 g.
    delay_s : float
        Shift of the local AIF relative to the global AIF, seconds.
    dispersion_s : float
        ``T_A`` of the exponential vascular transport function, seconds (0: none).
    """

    cbf: float
    cbv: float
    delay_s: float = 0.0
    dispersion_s: float = 0.0

    @property
    def mtt(self):
        """Mean transit time in seconds (central volume theorem)."""
        return 60.0 * self.cbv / self.cbf


#: default perfusion of the perfused classes (the issue's values)
DEFAULT_TISSUE = {
    PhantomLabel.GREY_MATTER: TissueClass(cbf=60.0, cbv=4.0),
    PhantomLabel.WHITE_MATTER: TissueClass(cbf=25.0, cbv=2.0),
    PhantomLabel.CORE: TissueClass(cbf=8.0, cbv=1.5, delay_s=6.0, dispersion_s=3.0),
    PhantomLabel.PENUMBRA: TissueClass(cbf=20.0, cbv=4.0, delay_s=6.0, dispersion_s=3.0),
}

#: unenhanced attenuation of the materials in HU; a voxel's baseline is the
#: partial-volume mixture of the materials it contains
MATERIAL_HU = {
    "air": -1000.0,
    "grey_matter": 40.0,
    "white_matter": 30.0,
    "csf": 8.0,
    "blood": 40.0,
    "skull": 1000.0,
    "soft_tissue": 40.0,
    "head_holder": 250.0,
}


@dataclass(frozen=True)
class PhantomGrid:
    """The CT grid of a phantom size.

    Attributes
    ----------
    shape : tuple of int
        (x, y, z) voxels; axes run left-to-right, posterior-to-anterior, inferior-to-superior (RAS).
    voxel_mm : tuple of float
        Voxel size in mm (thick axial slices).
    center_mm : tuple of float
        MNI coordinates (mm) of the grid's centre.
    template_step_mm : float
        Resolution at which the MNI maps are used (1 mm, or 2 mm by block averaging).
    """

    shape: tuple
    voxel_mm: tuple
    center_mm: tuple
    template_step_mm: float

    @property
    def affine(self):
        """Voxel-to-world (MNI mm) affine."""
        affine = np.diag(list(self.voxel_mm) + [1.0])
        affine[:3, 3] = np.asarray(self.center_mm) - (np.asarray(self.shape) - 1) / 2 * np.asarray(self.voxel_mm)
        return affine

    def padded(self, n_slices):
        """The same grid with ``n_slices`` more slices above and below (same centre)."""
        shape = (self.shape[0], self.shape[1], self.shape[2] + 2 * n_slices)
        return PhantomGrid(shape, self.voxel_mm, self.center_mm, self.template_step_mm)


#: the phantom sizes: ``small`` for tests (seconds), ``demo`` a realistic slab
GRIDS = {
    "small": PhantomGrid(shape=(60, 60, 4), voxel_mm=(4.0, 4.0, 5.0), center_mm=(0.0, -18.0, 10.0), template_step_mm=2.0),
    "demo": PhantomGrid(
        shape=(128, 128, 8), voxel_mm=(1.875, 1.875, 5.0), center_mm=(0.0, -18.0, 10.0), template_step_mm=1.0
    ),
}

#: thickness of the layers around the brain mask, mm: CSF rim, skull, scalp
CSF_RIM_MM = 3.0
SKULL_MM = 7.0
SCALP_MM = 5.0
#: gap between scalp and head holder, and the holder's thickness, mm
HOLDER_GAP_MM = 4.0
HOLDER_MM = 6.0
#: slices simulated above and below the slab, so that through-plane motion brings real anatomy into it
PAD_SLICES = 2


@dataclass
class Phantom:
    """A 4D CTP scan with its ground truth.

    Attributes
    ----------
    hu : ndarray, (x, y, z, t) float32
        The scan in HU (baseline, contrast, motion and noise included).
    affine : ndarray, (4, 4)
        Voxel-to-world affine (mm, MNI space of the reference position).
    frame_times : ndarray, (t,)
        Frame start times in seconds.
    labels : ndarray, (x, y, z) uint8
        :class:`PhantomLabel` codes.
    cbf, cbv, mtt, delay, dispersion : ndarray, (x, y, z) float32
        Truth in ml/100 g/min, ml/100 g, s, s, s; zero outside the perfused labels.
    baseline_hu : ndarray, (x, y, z) float32
        The noise-free unenhanced attenuation.
    aif : ndarray, (t,)
        The true global AIF in HU, blood baseline included: the curve of an
        artery voxel full of blood.
    vof : ndarray, (t,)
        The true VOF in HU, blood baseline included (the vein voxels' noise-free curve).
    blood_baseline_hu : float
        Unenhanced blood, HU.
    artery_partial_volume : float
        Fraction of blood in the artery voxels (their concentration is this times the AIF's).
    motion_parameters : ndarray, (t, 6) or None
        Per frame: translation x, y, z (mm) and rotation about x, y, z (degrees)
        of the head relative to frame 0 (columns :data:`.motion.PARAMETER_NAMES`),
        in the convention of :mod:`.motion`: rotation ``Rz @ Ry @ Rx`` about the
        slab's centre, then translation, along the array axes; a frame shows the
        reference head moved by its parameters (what registration should
        report for it). None without motion.
    parameters : dict
        Every value used to build the phantom (for sidecars and reports).
    """

    hu: np.ndarray
    affine: np.ndarray
    frame_times: np.ndarray
    labels: np.ndarray
    cbf: np.ndarray
    cbv: np.ndarray
    mtt: np.ndarray
    delay: np.ndarray
    dispersion: np.ndarray
    baseline_hu: np.ndarray
    aif: np.ndarray
    vof: np.ndarray
    blood_baseline_hu: float
    artery_partial_volume: float
    motion_parameters: np.ndarray | None
    parameters: dict = field(default_factory=dict)

    @property
    def aif_concentration(self):
        """The true global AIF as concentration (HU above the blood baseline)."""
        return self.aif - self.blood_baseline_hu

    @property
    def vof_concentration(self):
        """The true VOF as concentration (HU above the blood baseline)."""
        return self.vof - self.blood_baseline_hu

    @property
    def voxel_size_mm(self):
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def brain_mask(self):
        """Intracranial voxels (labels 1-7)."""
        return np.isin(self.labels, [int(v) for v in INTRACRANIAL_LABELS])


def label_names():
    """``{code: name}`` of the label map, e.g. ``{0: 'background', 1: 'grey_matter', ...}``."""
    return {int(label): label.name.lower() for label in PhantomLabel}


def phantom_frame_times(non_uniform=False, duration_s=60.0, fast_phase_s=30.0):
    """Frame start times in seconds.

    Uniform: 1 s frames from 0 to ``duration_s`` (60 frames, last at 59 s).
    Non-uniform: 1 s frames during the first ``fast_phase_s`` seconds (the
    first pass), then 2 s frames up to ``duration_s`` (45 frames, last at 58 s).

    >>> phantom_frame_times().size, phantom_frame_times(non_uniform=True)[28:33]
    (60, array([28., 29., 30., 32., 34.]))
    """
    if not non_uniform:
        return np.arange(0.0, duration_s, 1.0)
    return np.concatenate([np.arange(0.0, fast_phase_s, 1.0), np.arange(fast_phase_s, duration_s, 2.0)])


# ----------------------------------------------------------------------------------------------
# anatomy


#: nilearn's threshold of the rescaled T1 template that makes its brain mask
MNI_BRAIN_THRESHOLD = 0.2


@lru_cache(maxsize=4)
def _template_layers(step_mm, z_lo_mm, z_hi_mm):
    """MNI maps cropped to a z range, as material fractions, and their affine.

    Returns ``(fractions, affine)`` with ``fractions`` a dict of float32 arrays:
    grey_matter, white_matter, csf (inside the intracranial space), skull and
    soft_tissue (layers of ``SKULL_MM`` and ``SCALP_MM`` around the brain mask
    grown by ``CSF_RIM_MM``). ``step_mm`` 2 block-averages the 1 mm maps.
    """
    from ..templates import load_mni152  # files: the I/O layer, imported when a phantom is built

    images = load_mni152()
    reference = images["t1"]
    affine = reference.affine.copy()
    z_index = np.arange(reference.shape[2]) * affine[2, 2] + affine[2, 3]
    keep = np.flatnonzero((z_index >= z_lo_mm) & (z_index <= z_hi_mm))
    if keep.size == 0:
        raise ValueError(f"The slab z range [{z_lo_mm}, {z_hi_mm}] mm lies outside the MNI template.")
    crop = slice(keep[0], keep[-1] + 1)
    affine[2, 3] = z_index[keep[0]]
    maps = {}
    for name, image in images.items():
        full_max = float(np.max(image.dataobj))
        maps[name] = np.asarray(image.dataobj[:, :, crop], dtype=np.float32) / full_max
    maps["mask"] = (maps.pop("t1") > MNI_BRAIN_THRESHOLD).astype(np.float32)
    factor = int(round(step_mm))
    if factor > 1:
        maps = {name: _block_mean(values, factor) for name, values in maps.items()}
        affine = affine @ np.diag([factor, factor, factor, 1.0])
        affine[:3, 3] += (factor - 1) / 2 * np.diag(reference.affine)[:3]
    voxel = np.abs(np.diag(affine)[:3])
    brain = ndimage.binary_fill_holes(maps["mask"] > 0.5)
    distance = ndimage.distance_transform_edt(~brain, sampling=voxel)
    intracranial = (distance <= CSF_RIM_MM).astype(np.float32)
    grey = maps["grey_matter"] * intracranial
    white = maps["white_matter"] * intracranial
    fractions = {
        "grey_matter": grey,
        "white_matter": white,
        "csf": np.clip(intracranial - grey - white, 0.0, None),
        "skull": ((distance > CSF_RIM_MM) & (distance <= CSF_RIM_MM + SKULL_MM)).astype(np.float32),
        "soft_tissue": (
            (distance > CSF_RIM_MM + SKULL_MM) & (distance <= CSF_RIM_MM + SKULL_MM + SCALP_MM)
        ).astype(np.float32),
    }
    return fractions, affine


def _block_mean(values, factor):
    shape = [s // factor * factor for s in values.shape]
    values = values[: shape[0], : shape[1], : shape[2]]
    return values.reshape(shape[0] // factor, factor, shape[1] // factor, factor, shape[2] // factor, factor).mean(
        axis=(1, 3, 5)
    )


def _partial_volume_resample(maps, source_affine, grid, step_mm):
    """Average maps over each voxel of ``grid`` (sampled every ``step_mm``, linear interpolation)."""
    n_sub = [max(1, int(round(v / step_mm))) for v in grid.voxel_mm]
    index = np.indices(grid.shape, dtype=float).reshape(3, -1)
    to_source = np.linalg.inv(source_affine) @ grid.affine
    sums = {name: np.zeros(index.shape[1]) for name in maps}
    offsets = [((np.arange(n) + 0.5) / n - 0.5) for n in n_sub]
    for ox in offsets[0]:
        for oy in offsets[1]:
            for oz in offsets[2]:
                points = to_source[:3, :3] @ (index + np.array([[ox], [oy], [oz]])) + to_source[:3, 3:]
                for name, values in maps.items():
                    sums[name] += ndimage.map_coordinates(values, points, order=1, mode="constant", cval=0.0)
    count = np.prod(n_sub)
    return {name: (total / count).reshape(grid.shape).astype(np.float32) for name, total in sums.items()}


def _world_coordinates(grid):
    index = np.indices(grid.shape, dtype=float)
    affine = grid.affine
    return [affine[a, a] * index[a] + affine[a, 3] for a in range(3)]


def _anatomy(grid):
    """Material fractions and hard labels (no vessels, no lesion) on the CT grid."""
    z_centres = grid.affine[2, 2] * np.arange(grid.shape[2]) + grid.affine[2, 3]
    margin = CSF_RIM_MM + SKULL_MM + SCALP_MM + grid.voxel_mm[2]
    fractions, affine = _template_layers(
        float(grid.template_step_mm), float(z_centres.min() - margin), float(z_centres.max() + margin)
    )
    fractions = _partial_volume_resample(fractions, affine, grid, grid.template_step_mm)
    fractions["air"] = np.clip(1.0 - sum(fractions.values()), 0.0, None)
    order = ["air", "grey_matter", "white_matter", "csf", "skull", "soft_tissue"]
    codes = np.array(
        [
            PhantomLabel.BACKGROUND,
            PhantomLabel.GREY_MATTER,
            PhantomLabel.WHITE_MATTER,
            PhantomLabel.CSF,
            PhantomLabel.SKULL,
            PhantomLabel.SOFT_TISSUE,
        ],
        dtype=np.uint8,
    )
    labels = codes[np.argmax(np.stack([fractions[name] for name in order]), axis=0)]
    # the head holder: a band behind the head, a few mm from the scalp
    head = labels != PhantomLabel.BACKGROUND
    in_plane = ndimage.distance_transform_edt(~head, sampling=(grid.voxel_mm[0], grid.voxel_mm[1], 1e3))
    _, y_mm, _ = _world_coordinates(grid)
    head_centre_y = float(y_mm[head].mean())
    holder = (
        (in_plane > HOLDER_GAP_MM)
        & (in_plane <= HOLDER_GAP_MM + HOLDER_MM)
        & (y_mm < head_centre_y - 50.0)
        & ~head
    )
    labels[holder] = PhantomLabel.HEAD_HOLDER
    fractions["head_holder"] = holder.astype(np.float32)
    fractions["air"][holder] = 0.0
    return fractions, labels


def _smooth_field(shape, voxel_mm, rng, fwhm_mm=20.0):
    """Zero-mean, unit-sd Gaussian random field smoothed with a Gaussian of ``fwhm_mm``."""
    sigma = [fwhm_mm / 2.3548 / v for v in voxel_mm]
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (noise - noise.mean()) / (noise.std() + 1e-12)


def _ellipsoid(coords, centre, radii):
    return sum(((c - m) / r) ** 2 for c, m, r in zip(coords, centre, radii)) <= 1.0


def _lesion(labels, coords, rng):
    """Penumbra and core in an MCA-like territory of one hemisphere (core inside penumbra).

    Returns the updated labels and the lesion's geometry.
    """
    side = float(rng.choice([-1.0, 1.0]))
    centre = np.array([side * rng.uniform(35.0, 45.0), rng.uniform(-25.0, 10.0), rng.uniform(-2.0, 2.0)])
    centre[2] += float(np.mean(coords[2]))
    radii = np.array([rng.uniform(22.0, 30.0), rng.uniform(28.0, 40.0), rng.uniform(25.0, 35.0)])
    core_scale = rng.uniform(0.35, 0.55)
    # |offset_i / radius_i| <= (1 - s) / 2 for each axis keeps the core ellipsoid inside the penumbra's
    core_offset = rng.uniform(-0.5, 0.5, 3) * (1.0 - core_scale) * radii
    tissue = (labels == PhantomLabel.GREY_MATTER) | (labels == PhantomLabel.WHITE_MATTER)
    penumbra = tissue & _ellipsoid(coords, centre, radii)
    core = tissue & _ellipsoid(coords, centre + core_offset, core_scale * radii)
    labels = labels.copy()
    labels[penumbra] = PhantomLabel.PENUMBRA
    labels[core] = PhantomLabel.CORE
    geometry = {
        "hemisphere": "right" if side > 0 else "left",
        "penumbra_centre_mm": centre.tolist(),
        "penumbra_radii_mm": radii.tolist(),
        "core_centre_mm": (centre + core_offset).tolist(),
        "core_radii_mm": (core_scale * radii).tolist(),
    }
    return labels, geometry, side


def _nearest_index(axis_mm, value):
    return int(np.argmin(np.abs(axis_mm - value)))


def _vessels(labels, fractions, grid, lesion_side):
    """Place the artery (contralateral insular cistern) and the superior sagittal sinus.

    Returns the updated labels and the vessel geometry. The artery is a tube
    through all slices of ``max(1, round(4 mm / dx)) x max(2, round(4 mm / dy))``
    voxels; the sinus one of about 8 x 6 mm at the back of the intracranial
    space on the midline.
    """
    affine = grid.affine
    x_axis = affine[0, 0] * np.arange(grid.shape[0]) + affine[0, 3]
    y_axis = affine[1, 1] * np.arange(grid.shape[1]) + affine[1, 3]
    dx, dy = grid.voxel_mm[:2]
    labels = labels.copy()
    artery_x_mm, artery_y_mm = -lesion_side * 40.0, 2.0
    ax, ay = max(1, round(4.0 / dx)), max(2, round(4.0 / dy))
    i0 = _nearest_index(x_axis, artery_x_mm) - (ax - 1) // 2
    j0 = _nearest_index(y_axis, artery_y_mm) - (ay - 1) // 2
    labels[i0 : i0 + ax, j0 : j0 + ay, :] = PhantomLabel.ARTERY
    vx, vy = max(2, round(8.0 / dx)), max(2, round(6.0 / dy))
    v0 = _nearest_index(x_axis, 0.0) - (vx - 1) // 2
    intracranial = fractions["grey_matter"] + fractions["white_matter"] + fractions["csf"]
    midline = intracranial[v0 : v0 + vx].min(axis=0) > 0.5  # (y, z)
    if not midline.any(axis=0).all():
        raise RuntimeError("The phantom slab has a slice without intracranial space on the midline.")
    back = np.argmax(midline, axis=0)  # first (most posterior) intracranial row per slice
    rows = back[None, :] + np.arange(vy)[:, None]  # (vy, z)
    for k in range(grid.shape[2]):
        labels[v0 : v0 + vx, rows[:, k], k] = PhantomLabel.VEIN
    geometry = {
        "artery_centre_mm": [float(x_axis[i0:i0 + ax].mean()), float(y_axis[j0:j0 + ay].mean())],
        "artery_voxels_per_slice": int(ax * ay),
        "vein_voxels_per_slice": int(vx * vy),
    }
    return labels, geometry


# ----------------------------------------------------------------------------------------------
# motion


def _motion_parameters(n_frames, rng, n_moved=5, max_translation_mm=2.0, max_rotation_deg=2.0):
    """A smooth excursion of the head over ``n_moved`` frames after the first pass, back to rest.

    Translations in x, y and the rotation about z (in plane) have magnitudes in
    [0.4, 1] of the maxima; z translation and the out-of-plane rotations at
    most half the maxima.
    """
    start = int(rng.integers(min(20, n_frames - n_moved - 1), n_frames - n_moved))
    sign = rng.choice([-1.0, 1.0], 6)
    peak = np.array(
        [
            max_translation_mm * rng.uniform(0.4, 1.0),
            max_translation_mm * rng.uniform(0.4, 1.0),
            max_translation_mm * rng.uniform(0.0, 0.5),
            max_rotation_deg * rng.uniform(0.0, 0.5),
            max_rotation_deg * rng.uniform(0.0, 0.5),
            max_rotation_deg * rng.uniform(0.4, 1.0),
        ]
    ) * sign
    profile = np.zeros(n_frames)
    profile[start : start + n_moved] = np.sin(np.pi * np.arange(1, n_moved + 1) / (n_moved + 1))
    return profile[:, None] * peak[None, :] + 0.0  # + 0.0: no negative zeros in the written TSV


def _phantom_streams(seed):
    """The phantom's independent random streams: anatomy, bolus, motion, noise."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4))


def phantom_motion(seed, n_frames):
    """The motion ``make_phantom(..., seed=seed, motion=True)`` injects into ``n_frames`` frames, without building
    the phantom (its ``motion_parameters``): the truth for a phantom written to a file.

    >>> from ctp_nipype.sims.phantom import make_phantom
    >>> bool(np.array_equal(phantom_motion(3, 60), make_phantom("small", seed=3, motion=True).motion_parameters))
    True
    """
    return _motion_parameters(int(n_frames), _phantom_streams(seed)[2])


def apply_motion(hu, motion, voxel_mm, fill_hu=MATERIAL_HU["air"]):
    """Move the head in the frames whose parameters are not zero, in place (linear interpolation).

    Each frame shows the reference head moved by its parameters, about the
    volume's centre, in the convention of :mod:`.motion` (what its
    registration reports for that frame). A loop over the few moved frames.
    ``make_phantom(..., motion=True)`` uses it; so can a study that moves the
    same excursion elsewhere in time.
    """
    for frame in np.flatnonzero(np.any(motion != 0, axis=1)):
        hu[..., frame] = apply_rigid(hu[..., frame], motion[frame], voxel_mm, fill_value=fill_hu, inverse=True)
    return hu


# ----------------------------------------------------------------------------------------------
# curves


def _class_curves(frame_times, classes, bolus, residue_shape, venous_delay_s, venous_dispersion_s, kappa_h, rho):
    """Global AIF, VOF and one tissue curve per class, all as concentration at the frame times."""
    t_fine = np.arange(int(np.ceil(frame_times[-1] / FINE_DT)) + 2) * FINE_DT
    aif_fine = gamma_variate_aif(t_fine, t0=bolus["t0_s"], alpha=bolus["alpha"], beta=bolus["beta_s"], peak=bolus["peak_hu"])
    n_classes = len(classes)
    global_aif = np.broadcast_to(aif_fine, (n_classes, t_fine.size))
    local_aif = disperse(
        delay_curves(global_aif, FINE_DT, [c.delay_s for c in classes]), FINE_DT, [c.dispersion_s for c in classes]
    )
    residue = residue_function(t_fine, [c.mtt for c in classes], residue_shape)
    flow_residue = flow_scaled_residue(residue, [c.cbf for c in classes], kappa_h=kappa_h, rho=rho)
    tissue_fine = convolve(local_aif, flow_residue, FINE_DT)
    vof_fine = disperse(delay_curves(aif_fine, FINE_DT, venous_delay_s), FINE_DT, venous_dispersion_s)[0]
    return (
        sample_curves(aif_fine, FINE_DT, frame_times),
        sample_curves(vof_fine, FINE_DT, frame_times),
        sample_curves(tissue_fine, FINE_DT, frame_times),
    )


# ----------------------------------------------------------------------------------------------
# the phantom


def make_phantom(
    size="small",
    seed=0,
    non_uniform_timing=False,
    motion=False,
    noise_sd_hu=8.0,
    frame_times=None,
    artery_partial_volume=0.5,
    tissue=None,
    cbf_variation=0.1,
    residue_shape=3.0,
    aif_peak_hu=400.0,
    venous_delay_s=6.0,
    venous_dispersion_s=3.0,
    kappa_h=KAPPA_H,
    rho=RHO,
):
    """Build a digital brain phantom: a 4D CTP slab in HU and its truth.

    Parameters
    ----------
    size : {'small', 'demo'}
        ``small``: 60 x 60 x 4 voxels of 4 x 4 x 5 mm (tests, about a second);
        ``demo``: 128 x 128 x 8 voxels of 1.875 x 1.875 x 5 mm (a realistic slab).
        Both slabs are centred on z = 10 mm MNI (basal ganglia, lateral ventricles).
    seed : int
        Everything random derives from it: the lesion (hemisphere, position,
        size), the bolus (arrival 4-6 s, peak ``aif_peak_hu`` times 0.8-1.2,
        width times 0.9-1.1), the CBF field, the motion and the noise (each from
        its own stream, so ``noise_sd_hu=0`` gives the same phantom without noise).
    non_uniform_timing : bool
        1 s frames for 30 s then 2 s frames (45 frames) instead of 60 frames of 1 s.
    motion : bool
        Inject a small rigid head motion (<= 2 mm, <= 2 degrees) over 5 frames after the first pass.
    noise_sd_hu : float
        Standard deviation of the Gaussian noise added to every voxel and frame, HU.
    frame_times : array_like, optional
        Explicit frame start times in seconds (overrides ``non_uniform_timing``).
        The truth CBV is the full-window one: keep the last frame at 55 s or later.
    artery_partial_volume : float
        Fraction of arterial blood in the artery voxels, in (0, 1].
    tissue : dict, optional
        ``{PhantomLabel: TissueClass}`` overriding :data:`DEFAULT_TISSUE` for some classes.
    cbf_variation : float
        Relative standard deviation of the smooth CBF field inside a class (MTT is kept per class).
    residue_shape : float
        Shape ``alpha`` of the gamma transit-time distribution of the residue (1: exponential).
    aif_peak_hu : float
        Nominal peak of the AIF above the blood baseline, HU.
    venous_delay_s, venous_dispersion_s : float
        Delay and ``T_A`` turning the AIF into the VOF, seconds.
    kappa_h, rho : float
        Hematocrit factor and tissue density (g/ml) of the conventions.

    Returns
    -------
    Phantom

    Examples
    --------
    >>> ph = make_phantom("small", seed=1, noise_sd_hu=0)
    >>> ph.hu.shape, float(ph.frame_times[-1])
    ((60, 60, 4, 60), 59.0)
    >>> int(np.median(ph.cbf[ph.labels == PhantomLabel.GREY_MATTER]))
    60
    """
    if size not in GRIDS:
        raise ValueError(f"Unknown phantom size {size!r}; choose one of {', '.join(sorted(GRIDS))}.")
    if not 0.0 < artery_partial_volume <= 1.0:
        raise ValueError(f"artery_partial_volume must be in (0, 1], got {artery_partial_volume}.")
    if noise_sd_hu < 0:
        raise ValueError(f"noise_sd_hu must be >= 0 HU, got {noise_sd_hu}.")
    if frame_times is None:
        frame_times = phantom_frame_times(non_uniform=non_uniform_timing)
    try:
        frame_times = check_frame_times(frame_times, name="The phantom's frame times")
    except TimingError as err:
        raise ValueError(str(err)) from None
    if frame_times.size < 10:
        raise ValueError(f"The phantom needs at least 10 frames, got {frame_times.size}.")
    classes = dict(DEFAULT_TISSUE)
    classes.update({PhantomLabel(k): v for k, v in (tissue or {}).items()})
    unknown = set(classes) - set(PERFUSED_LABELS)
    if unknown:
        raise ValueError(
            f"tissue may only set the perfused classes {[lab.name for lab in PERFUSED_LABELS]}, "
            f"not {[PhantomLabel(u).name for u in unknown]}."
        )
    for label, params in classes.items():
        if params.cbf <= 0 or params.cbv <= 0:
            raise ValueError(f"{label.name}: CBF and CBV must be positive, got {params.cbf} and {params.cbv}.")

    anatomy_rng, bolus_rng, motion_rng, noise_rng = _phantom_streams(seed)
    # the phantom is built on a grid padded in z and cropped to the slab at the end
    slab = GRIDS[size]
    grid = slab.padded(PAD_SLICES)
    fractions, labels = _anatomy(grid)
    coords = _world_coordinates(grid)
    labels, lesion, lesion_side = _lesion(labels, coords, anatomy_rng)
    labels, vessels = _vessels(labels, fractions, grid, lesion_side)
    cbf_field = _smooth_field(grid.shape, grid.voxel_mm, anatomy_rng)

    # truth maps
    cbf = np.zeros(grid.shape, np.float32)
    cbv = np.zeros(grid.shape, np.float32)
    mtt = np.zeros(grid.shape, np.float32)
    delay = np.zeros(grid.shape, np.float32)
    dispersion = np.zeros(grid.shape, np.float32)
    class_order = list(PERFUSED_LABELS)
    for label in class_order:
        params = classes[label]
        inside = labels == label
        cbf[inside] = params.cbf * np.clip(1.0 + cbf_variation * cbf_field[inside], 0.5, 1.5)
        cbv[inside] = cbf[inside] * params.mtt / 60.0
        mtt[inside] = params.mtt
        delay[inside] = params.delay_s
        dispersion[inside] = params.dispersion_s

    # curves
    bolus = {
        "t0_s": float(bolus_rng.uniform(4.0, 6.0)),
        "alpha": 3.0,
        "beta_s": float(1.5 * bolus_rng.uniform(0.9, 1.1)),
        "peak_hu": float(aif_peak_hu * bolus_rng.uniform(0.8, 1.2)),
    }
    aif_c, vof_c, tissue_c = _class_curves(
        frame_times,
        [classes[label] for label in class_order],
        bolus,
        residue_shape,
        venous_delay_s,
        venous_dispersion_s,
        kappa_h,
        rho,
    )
    # per-voxel curves: row 0 of the table is "no enhancement"
    table = np.zeros((len(class_order) + 3, frame_times.size))
    table[1 : len(class_order) + 1] = tissue_c
    table[len(class_order) + 1] = artery_partial_volume * aif_c
    table[len(class_order) + 2] = vof_c
    row = np.zeros(grid.shape, dtype=np.intp)
    scale = np.ones(grid.shape, dtype=np.float32)
    for i, label in enumerate(class_order):
        inside = labels == label
        row[inside] = i + 1
        scale[inside] = cbf[inside] / classes[label].cbf
    row[labels == PhantomLabel.ARTERY] = len(class_order) + 1
    row[labels == PhantomLabel.VEIN] = len(class_order) + 2

    blood = MATERIAL_HU["blood"]
    baseline = sum(fractions[name] * MATERIAL_HU[name] for name in fractions).astype(np.float32)
    baseline[labels == PhantomLabel.ARTERY] = (
        artery_partial_volume * blood + (1 - artery_partial_volume) * MATERIAL_HU["csf"]
    )
    baseline[labels == PhantomLabel.VEIN] = blood
    hu = baseline[..., None] + scale[..., None] * table.astype(np.float32)[row]

    centre_mm = grid.affine[:3, :3] @ ((np.asarray(grid.shape) - 1) / 2) + grid.affine[:3, 3]
    motion_parameters = None
    if motion:
        motion_parameters = _motion_parameters(frame_times.size, motion_rng)
        hu = apply_motion(hu, motion_parameters, grid.voxel_mm)
    keep = (slice(None), slice(None), slice(PAD_SLICES, PAD_SLICES + slab.shape[2]))
    hu = np.ascontiguousarray(hu[keep])
    labels, baseline, cbf, cbv, mtt, delay, dispersion = (
        np.ascontiguousarray(values[keep]) for values in (labels, baseline, cbf, cbv, mtt, delay, dispersion)
    )
    if noise_sd_hu > 0:
        hu += np.float32(noise_sd_hu) * noise_rng.standard_normal(hu.shape, dtype=np.float32)

    parameters = {
        "size": size,
        "seed": int(seed),
        "noise_sd_hu": float(noise_sd_hu),
        "artery_partial_volume": float(artery_partial_volume),
        "tissue": {
            label.name.lower(): {
                "cbf": p.cbf,
                "cbv": p.cbv,
                "mtt": p.mtt,
                "delay_s": p.delay_s,
                "dispersion_s": p.dispersion_s,
            }
            for label, p in classes.items()
        },
        "cbf_variation": float(cbf_variation),
        "residue_shape": float(residue_shape),
        "bolus": bolus,
        "venous_delay_s": float(venous_delay_s),
        "venous_dispersion_s": float(venous_dispersion_s),
        "kappa_h": float(kappa_h),
        "rho": float(rho),
        "material_hu": dict(MATERIAL_HU),
        "lesion": lesion,
        "vessels": vessels,
        "motion_centre_mm": centre_mm.tolist(),  # world (MNI) mm: the slab's centre
        "labels": label_names(),
        "cbv_truth": "full-window CBF * MTT / 60 (the curves' areas after the last frame are < 0.5%)",
    }
    return Phantom(
        hu=hu.astype(np.float32, copy=False),
        affine=slab.affine,
        frame_times=frame_times,
        labels=labels.astype(np.uint8),
        cbf=cbf,
        cbv=cbv,
        mtt=mtt,
        delay=delay,
        dispersion=dispersion,
        baseline_hu=baseline,
        aif=blood + aif_c,
        vof=blood + vof_c,
        blood_baseline_hu=blood,
        artery_partial_volume=float(artery_partial_volume),
        motion_parameters=motion_parameters,
        parameters=parameters,
    )


def in_window_cbv(concentration, aif_concentration, frame_times, kappa_h=KAPPA_H, rho=RHO):
    """CBV [ml/100 g] from curve areas: ``100 kappa_H / rho * integral(C) / integral(Ca)`` (trapezoid).

    ``concentration`` has time last; ``frame_times`` may be non-uniform.
    """
    times = np.asarray(frame_times, dtype=float)
    return cbv_from_areas(np.trapezoid(concentration, times, axis=-1), np.trapezoid(aif_concentration, times),
                          kappa_h, rho)
