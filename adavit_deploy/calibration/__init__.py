"""Calibration: the set of images budgets and INT8 scales are measured on, the
threshold search that turns a GMACs budget into decision thresholds, and the
reduced-precision (FP16, INT8 Q/DQ) variants of a bundle's graphs."""

from .budgets import calibrate_budgets, parse_budgets
from .data import CalibrationSet, load_calibration

__all__ = ["CalibrationSet", "calibrate_budgets", "load_calibration", "parse_budgets"]
