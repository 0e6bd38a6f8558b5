"""AI results as standard DICOM: a TID 1500 SR and a fractional SEG per model run, naming their algorithm."""

from inference.dicom_results.algorithm import Algorithm
from inference.dicom_results.finding import FindingResult
from inference.dicom_results.seg import build_seg
from inference.dicom_results.sr import build_sr

__all__ = ["Algorithm", "FindingResult", "build_seg", "build_sr"]
