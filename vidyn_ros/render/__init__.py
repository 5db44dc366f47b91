"""Differentiable Gaussian rasterisation with one interface and two backends.

``render(gaussians, cameras, ...) -> RenderOutput`` picks gsplat on CUDA and the pure-PyTorch reference backend
otherwise (``backend="auto" | "torch" | "gsplat"``). See vidyn_ros/render/api.py.
"""

from vidyn_ros.render.api import RenderOutput, render

__all__ = ["RenderOutput", "render"]
