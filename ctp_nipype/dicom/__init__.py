"""DICOM in and out: reading a CT perfusion series (pydicom) and writing results a PACS accepts (highdicom).

No science here: files in, arrays and files out.
"""

from .read import DicomCTP, DicomInputError, choose_series, read_dicom_ctp, read_dicom_series, scan_folder

__all__ = ["DicomCTP", "DicomInputError", "choose_series", "read_dicom_ctp", "read_dicom_series", "scan_folder"]
