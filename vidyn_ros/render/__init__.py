"""Differentiable Gaussian rasterisation with one interface and two backends.

``render(gaussians, cameras, ...) -> RenderOutput`` picks gsplat on CUDA and the pure-PyTorch reference backend
otherwise (``backend="auto" | "torch" | "gsplat"``). See vidyn_ros/render/api.py. ``render_torch`` is the reference
twin (same call, always the torch backend, CPU or CUDA tensors). gsplat is imported only when it renders.
"""

from vidyn_ros.render._dispatch import render_torch
from vidyn_ros.render.api import RenderOutput, render

__all__ = ["RenderOutput", "render", "render_torch"]
