"""Gaussian splats on the unit sphere: vMF maths, mixture energy, Langevin sampling, SOC dedupe."""
