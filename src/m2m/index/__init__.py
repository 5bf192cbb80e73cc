"""Approximate nearest-neighbour indexes: HRM2, a hierarchical IVF (NumPy, plus an optional
compiled int8 scan when numba is installed)."""

from m2m.index.hrm2 import HRM2Index, HRM2Params

__all__ = ["HRM2Index", "HRM2Params"]
