"""The deployed perception path as library calls, for tools that run offline (``vidyn track``, ``vidyn eval-scene``,
bench/soak.py): the weight-free segmenter and the scene with the settings of the shipped node graph
(config/graphs/sim.yaml, the same as rig.yaml), so that figures measured offline are those of what users run.

Masks come from :class:`vidyn_ros.rig.segmentation.InstanceSegmenter` (fused-cloud clustering, ids tracked over time),
never from the simulator: a simulated episode's true masks are ground truth for evaluation only.

The graph's settings are for 640x480 images (the simulated rig's and the RealSense default). Frames of another size
scale the two resolution-bound settings with the width: the segmenter's pixel ``stride`` and the scene's
``image_downscale`` (2 and 4 at 640 px wide; both 1 at 160 px), so that the working resolution stays the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from vidyn_ros.rig.segmentation import InstanceSegmenter, SegmenterConfig
from vidyn_ros.types import CameraFrame, MultiViewFrame

from .pipeline import SceneConfig, scene_config_from_params

DEPLOYED_GRAPH = "sim"  # config/graphs/sim.yaml: sim_rig -> segmenter -> scene (rig.yaml: realsense -> same)
DEPLOYED_WIDTH = 640  # image width the graph's resolution-bound settings are written for [px]


def graph_node_parameters(node: str, graph: str = DEPLOYED_GRAPH) -> dict[str, Any]:
    """The parameters a shipped graph gives node ``node`` (its graph name). ConfigError if it has no such node."""
    from vidyn_ros import graph as graphs

    return dict(graphs.load_graph(graph).node_spec(node).parameters)


def _scaled(value: int, width: int | None) -> int:
    """A per-pixel step written for DEPLOYED_WIDTH, for images ``width`` px wide (at least 1)."""
    if width is None or width <= 0:
        return max(1, int(value))
    return max(1, round(int(value) * width / DEPLOYED_WIDTH))


def segmenter_config(width: int | None = None, graph: str = DEPLOYED_GRAPH, **overrides: Any) -> SegmenterConfig:
    """The graph's segmenter settings (node parameters with the same names as SegmenterConfig fields), the stride
    scaled to images ``width`` px wide (None: as written, i.e. for 640 px)."""
    params = graph_node_parameters("segmenter", graph)
    names = {f.name for f in dataclasses.fields(SegmenterConfig)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items() if k in names}
    kw["stride"] = _scaled(kw.get("stride", 1), width)
    kw.update(overrides)
    return SegmenterConfig(**kw)


def scene_config(width: int | None = None, graph: str = DEPLOYED_GRAPH, **overrides: Any) -> SceneConfig:
    """The graph's scene settings as a SceneConfig, ``image_downscale`` scaled to images ``width`` px wide.
    ``overrides`` are SceneConfig fields (e.g. ``iters_per_frame=2``)."""
    params = graph_node_parameters("scene", graph)
    params["image_downscale"] = _scaled(params.get("image_downscale", 1), width)
    return dataclasses.replace(scene_config_from_params(params), **overrides)


def with_masks(frame: MultiViewFrame, masks: list[Any] | None) -> MultiViewFrame:
    """A shallow copy of ``frame`` whose views carry ``masks`` (None: no masks)."""
    views = [CameraFrame(v.camera, v.stamp_ns, v.color, v.depth, None if masks is None else masks[i])
             for i, v in enumerate(frame.views)]
    return MultiViewFrame(frame.stamp_ns, views)


class DeployedSegmenter:
    """The segmenter node's work without ROS: ``frame -> frame`` with the segmenter's masks instead of any input
    masks (one instance per episode: object ids are tracked across calls). Timings of the last call in ``last_ms``."""

    def __init__(self, config: SegmenterConfig | None = None, width: int | None = None) -> None:
        self.config = config
        self.width = width
        self.segmenter: InstanceSegmenter | None = InstanceSegmenter(config) if config is not None else None
        self.last_ms = 0.0

    def __call__(self, frame: MultiViewFrame) -> MultiViewFrame:
        if self.segmenter is None:  # settings for the first frame's image size
            width = self.width or (frame.views[0].camera.width if frame.views else None)
            self.config = segmenter_config(width)
            self.segmenter = InstanceSegmenter(self.config)
        result = self.segmenter.segment(frame)
        self.last_ms = result.timings_ms.get("total", 0.0)
        return with_masks(frame, result.masks)

    def reset(self) -> None:
        if self.segmenter is not None:
            self.segmenter.reset()


def segment_frames(frames: Iterable[MultiViewFrame], config: SegmenterConfig | None = None) -> Iterator[MultiViewFrame]:
    """Every frame with the deployed segmenter's masks (ids consistent across views and over the sequence); input
    masks are dropped. ``config`` None: the shipped graph's settings for the frames' image width."""
    seg = DeployedSegmenter(config)
    for frame in frames:
        yield seg(frame)


def deployed_parameters(width: int | None = None) -> Mapping[str, Any]:
    """What the deployed path runs with, for result files: the segmenter and scene settings after scaling."""
    return {"graph": DEPLOYED_GRAPH, "segmenter": dataclasses.asdict(segmenter_config(width)),
            "scene": dataclasses.asdict(scene_config(width))}
