"""Nipype interfaces: each reads files, calls the science in ctp_nipype.perfusion / ctp_nipype.nn, writes files."""

from .svd import SVDDeconvolution  # noqa: F401
from .transformer import TransformerPerfusion  # noqa: F401
from .preprocessing import BrainMask, CSFMask, GuidedFilter, LoadCTP, MotionCorrection, SelectAIFVOF, VesselMask  # noqa: F401
from .stats import GroupStats, LesionVolumes, MapStats  # noqa: F401
from .report import ScanReport  # noqa: F401
from .triage import TimeToPeak, TriageSummary  # noqa: F401
