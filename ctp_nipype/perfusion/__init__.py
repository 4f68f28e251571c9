"""The science of CT perfusion on plain numpy arrays (no nipype, no files).

Modules
-------
constants      physical constants and units
timing         frame times: sources, checks, resampling to a uniform grid
concentration  HU to contrast concentration, bolus arrival
convolution    the trapezoidal convolution and its matrices
svd            sSVD, cSVD and oSVD deconvolution (one oSVD ladder for one AIF or one per curve)
maps           CBF, CBV, MTT and Tmax from a residue and the curves' areas (every method's formulas)
gamma_variate  the gamma-variate bolus and its area
aif            the global AIF and VOF: automatic selection, partial-volume correction, the user's choices
motion         motion correction, censoring and the repair of censored frames
evaluation     methods over simulated curves with known truth, and the paper's metrics
"""

from .constants import KAPPA_H, RHO, UNITS
from .convolution import circulant_matrix, convolve, toeplitz_matrix, trapezoid_integral
from .concentration import detect_bolus_arrival, to_concentration
from .svd import SVDFit, SVDModel, oscillation_index
from .timing import FrameTiming, frame_times_from_sources, resample_to_uniform

__all__ = [
    "KAPPA_H",
    "RHO",
    "UNITS",
    "FrameTiming",
    "SVDFit",
    "SVDModel",
    "circulant_matrix",
    "convolve",
    "detect_bolus_arrival",
    "frame_times_from_sources",
    "oscillation_index",
    "resample_to_uniform",
    "to_concentration",
    "toeplitz_matrix",
    "trapezoid_integral",
]
