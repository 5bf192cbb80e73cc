"""Approximate nearest-neighbour indexes (NumPy only): HRM2, a hierarchical IVF."""

from m2m.index.hrm2 import HRM2Index, HRM2Params

__all__ = ["HRM2Index", "HRM2Params"]
