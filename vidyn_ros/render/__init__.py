"""Differentiable Gaussian rasterisation with one interface and two backends.

``render(gaussians, cameras, ...) -> RenderOutput`` picks gsplat on CUDA and the pure-PyTorch reference backend
otherwise (``backend="auto" | "torch" | "gsplat"``). See vidyn_ros/render/api.py. ``render_torch`` is the reference
twin (same call, always the torch backend, CPU or CUDA tensors). gsplat is imported only when it renders.
``render_batch(gaussians, cameras, means=[..., N, 3], quats=...)`` renders many configurations of one set of
Gaussians (candidate futures) in one call. ``set_cpu_threads(n)`` sets the process's CPU thread count for torch and
the render (see docs/render.md).
"""

from vidyn_ros.render._dispatch import render_torch
from vidyn_ros.render._torch_backend import set_cpu_threads
from vidyn_ros.render.api import RenderOutput, render, render_batch

__all__ = ["RenderOutput", "render", "render_batch", "render_torch", "set_cpu_threads"]
