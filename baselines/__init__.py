"""Inpainting methods behind one contract, and the runner that applies any of them to a MISATO folder.

A method receives RGB ``uint8 [H, W, 3]`` images and boolean ``[H, W]`` masks (True = hole) and returns RGB
``uint8`` images of the same size; conversion to a method's own formats and mask polarity lives in its adapter.
"""
from baselines.base import InpaintingMethod, available_methods, create_method
from baselines.runner import run_method

__all__ = ["InpaintingMethod", "available_methods", "create_method", "run_method"]
