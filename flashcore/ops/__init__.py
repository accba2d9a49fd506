"""Fused decode kernels: one file per kernel, each with a launcher that takes out= buffers."""
