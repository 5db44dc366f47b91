"""Rig calibration from one capture of a known target: a ChArUco board lying on the table.

Why a known target: the table plane alone fixes z and two rotations, but not x, y and yaw; scene-based methods must
then invent a world origin. A ChArUco board (OpenCV's ``cv2.aruco``, in opencv-python-headless) *defines* the world:

* origin: the board centre projected onto the table surface; z up (out of the board);
* x: the board image's "right" (along its columns), y: the board image's "up".

Each camera sees the board, its corners are detected with sub-pixel accuracy (ids make them unambiguous even when
the board is partly hidden), and ``solvePnP`` + Levenberg-Marquardt refinement gives the board pose in the camera,
hence the camera-to-world pose. Cameras are independent: one that does not see enough corners is reported by name.

The same target is a textured thin box in the simulated rig (``config/scenarios/calibration.yaml``, image
``config/scenarios/charuco_board.png`` made by :meth:`CharucoTarget.image`), where the truth is known.

Board texture geometry (docs/scenarios.md): a W x H px image covering a box top of half-extents (hx, hy) maps its
continuous pixel coordinate (u, v) to body (hx (2u/W - 1), hy (1 - 2v/H), hz). OpenCV draws corner (x, y) of the
board (x along columns, y down the rows, metres) at continuous pixel (margin + x, margin + y) * px/m, so in the body
frame a corner sits at (x - w/2, h/2 - y, hz) for a board of squares w x h metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from vidyn_ros.errors import CameraError, ConfigError
from vidyn_ros.geometry import make_se3
from vidyn_ros.types import CameraModel, MultiViewFrame, invert_se3


@dataclass(frozen=True)
class CharucoTarget:
    """A ChArUco board lying flat on the table.

    Attributes:
        squares: (columns, rows) of chessboard squares.
        square_length: square side [m]; marker_length: ArUco marker side [m] (< square_length).
        dictionary: OpenCV ArUco dictionary name (``DICT_4X4_50`` ...).
        margin: white border around the squares [m] (part of the printed/textured board).
        thickness: height of the board's top surface above the table [m].
        position: (x, y) of the board centre in the world [m] (0, 0 when the board defines the world).
        yaw_deg: rotation of the board about world z [deg] (0 when the board defines the world).
    """

    squares: tuple[int, int] = (7, 5)
    square_length: float = 0.05
    marker_length: float = 0.0375
    dictionary: str = "DICT_4X4_50"
    margin: float = 0.01
    thickness: float = 0.002
    position: tuple[float, float] = (0.0, 0.0)
    yaw_deg: float = 0.0

    def board(self):
        import cv2

        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard(tuple(self.squares), self.square_length, self.marker_length, d)

    @property
    def squares_size_m(self) -> tuple[float, float]:
        return self.squares[0] * self.square_length, self.squares[1] * self.square_length

    @property
    def size_m(self) -> tuple[float, float]:
        """Printed board size including margins [m] (width along x, height along y)."""
        w, h = self.squares_size_m
        return w + 2 * self.margin, h + 2 * self.margin

    @property
    def T_world_board(self) -> np.ndarray:  # noqa: N802 (T_a_b names a transform, as in types.py)
        """Board body frame (centre of its top surface, x right, y up in the image) -> world."""
        c, s = np.cos(np.radians(self.yaw_deg)), np.sin(np.radians(self.yaw_deg))
        R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return make_se3(R, np.array([self.position[0], self.position[1], self.thickness]))

    def corner_points_world(self) -> np.ndarray:
        """[N, 3] world positions of the chessboard corners, indexed by ChArUco corner id."""
        obj = np.asarray(self.board().getChessboardCorners(), dtype=np.float64).reshape(-1, 3)
        w, h = self.squares_size_m
        body = np.stack([obj[:, 0] - w / 2, h / 2 - obj[:, 1], np.zeros(len(obj))], axis=1)
        T = self.T_world_board
        return body @ T[:3, :3].T + T[:3, 3]

    def image(self, px_per_square: int = 100) -> np.ndarray:
        """The board as an HxW uint8 grey image with square texels (margin included), e.g. for a texture or print."""
        ppm = px_per_square / self.square_length
        m = round(self.margin * ppm)
        w, h = self.squares[0] * px_per_square + 2 * m, self.squares[1] * px_per_square + 2 * m
        return self.board().generateImage((w, h), marginSize=m)

    def box_half_size(self) -> list[float]:
        """MuJoCo half-extents of a box carrying :meth:`image` as its top texture (thin: ``thickness``)."""
        w, h = self.size_m
        return [w / 2, h / 2, self.thickness / 2]


def load_target(path: str | Path) -> CharucoTarget:
    """Target YAML -> CharucoTarget. Keys: type (charuco), squares, square_length, marker_length, dictionary, margin,
    thickness, position, yaw_deg. ConfigError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: calibration target file not found")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping")
    if doc.get("type", "charuco") != "charuco":
        raise ConfigError(f"{path}: type: only 'charuco' targets are supported, got {doc.get('type')!r}")
    known = {"type", "squares", "square_length", "marker_length", "dictionary", "margin", "thickness", "position",
             "yaw_deg"}
    for key in doc:
        if key not in known:
            raise ConfigError(f"{path}: {key}: unknown key (expected one of {', '.join(sorted(known))})")
    kw = {k: v for k, v in doc.items() if k != "type"}
    try:
        if "squares" in kw:
            kw["squares"] = tuple(int(v) for v in kw["squares"])
            assert len(kw["squares"]) == 2 and min(kw["squares"]) >= 2
        if "position" in kw:
            kw["position"] = tuple(float(v) for v in kw["position"])
            assert len(kw["position"]) == 2
        for k in ("square_length", "marker_length", "margin", "thickness", "yaw_deg"):
            if k in kw:
                kw[k] = float(kw[k])
    except (TypeError, ValueError, AssertionError):
        raise ConfigError(f"{path}: squares must be 2 integers >= 2, position 2 numbers, lengths numbers") from None
    target = CharucoTarget(**kw)
    if not 0 < target.marker_length < target.square_length:
        raise ConfigError(f"{path}: marker_length must be between 0 and square_length")
    import cv2

    if not hasattr(cv2.aruco, target.dictionary):
        raise ConfigError(f"{path}: dictionary: unknown ArUco dictionary {target.dictionary!r}")
    return target


@dataclass
class PoseEstimate:
    """One camera's calibration result."""

    camera: str
    T_world_cam: np.ndarray  # 4x4 camera-to-world
    corner_ids: np.ndarray  # [M] detected ChArUco corner ids
    corners_px: np.ndarray  # [M, 2] their sub-pixel image positions
    rms_px: float  # reprojection RMS error of the detected corners [px]
    extra: dict = field(default_factory=dict)


def detect_corners(color: np.ndarray, target: CharucoTarget) -> tuple[np.ndarray, np.ndarray]:
    """HxWx3 uint8 RGB (or HxW grey) -> (ids [M] int, corners [M, 2] float64 px; OpenCV pixel centres)."""
    import cv2

    grey = color if color.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(color), cv2.COLOR_RGB2GRAY)
    params = cv2.aruco.CharucoParameters()
    params.tryRefineMarkers = True
    det_params = cv2.aruco.DetectorParameters()
    det_params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    detector = cv2.aruco.CharucoDetector(target.board(), params, det_params)
    corners, ids, _, _ = detector.detectBoard(grey)
    if ids is None or len(ids) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 2))
    return np.asarray(ids, dtype=np.int64).reshape(-1), np.asarray(corners, dtype=np.float64).reshape(-1, 2)


def estimate_camera_pose(color: np.ndarray, camera: CameraModel, target: CharucoTarget,
                         min_corners: int = 6) -> PoseEstimate:
    """Camera-to-world pose of ``camera`` from one image of the target. CameraError (one line) if too few corners."""
    import cv2

    ids, px = detect_corners(color, target)
    if len(ids) < min_corners:
        raise CameraError(
            f"{camera.name}: ChArUco board not found ({len(ids)} corners detected, need {min_corners}); "
            "is the target in view and well lit?")
    obj = target.corner_points_world()[ids]
    K = np.asarray(camera.K, dtype=np.float64)
    D = np.asarray(camera.D, dtype=np.float64).reshape(-1)
    if camera.distortion_model == "equidistant":  # fisheye model: undistort to the pinhole first
        px_u = cv2.fisheye.undistortPoints(px.reshape(-1, 1, 2), K, D[:4], P=K).reshape(-1, 2)
        D_use = np.zeros(5)
    else:
        px_u, D_use = px, D
    ok, rvec, tvec = cv2.solvePnP(obj, px_u, K, D_use, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise CameraError(f"{camera.name}: solvePnP failed on {len(ids)} ChArUco corners")
    rvec, tvec = cv2.solvePnPRefineLM(obj, px_u, K, D_use, rvec, tvec)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, K, D_use)
    rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - px_u) ** 2, axis=1))))
    R, _ = cv2.Rodrigues(rvec)
    T_cam_world = make_se3(R, tvec.reshape(3))
    return PoseEstimate(camera.name, invert_se3(T_cam_world), ids, px, rms)


def calibrate_rig(frame: MultiViewFrame, target: CharucoTarget, min_corners: int = 6,
                  skip_failed: bool = False) -> dict[str, PoseEstimate]:
    """Every camera of one multi-view capture -> PoseEstimate. A camera without the board raises CameraError naming
    it, or is left out with ``skip_failed``."""
    out: dict[str, PoseEstimate] = {}
    failed = []
    for view in frame.views:
        try:
            out[view.camera.name] = estimate_camera_pose(view.color, view.camera, target, min_corners)
        except CameraError as err:
            if not skip_failed:
                raise
            failed.append(str(err))
    if not out:
        raise CameraError("no camera saw the calibration target: " + "; ".join(failed))
    return out


def pose_errors(T_est: np.ndarray, T_true: np.ndarray) -> tuple[float, float]:
    """(rotation error [deg], translation error [m]) between two camera-to-world poses."""
    from vidyn_ros.geometry import rotation_angle_deg

    return rotation_angle_deg(T_est[:3, :3], T_true[:3, :3]), float(np.linalg.norm(T_est[:3, 3] - T_true[:3, 3]))


def draw_detections(frame: MultiViewFrame, estimates: dict[str, PoseEstimate], target: CharucoTarget,
                    path: str | Path) -> Path:
    """PNG: each camera's image with detected corners (green) and the corners reprojected from the estimate (red),
    two cameras per row (cameras of different resolutions are scaled to the first one's tile size)."""
    import cv2

    from vidyn_ros.viz import image_grid

    tiles, labels = [], []
    world = target.corner_points_world()
    for view in frame.views:
        img = np.array(view.color, dtype=np.uint8, order="C")  # RGB; OpenCV draws on any 3-channel image
        est = estimates.get(view.camera.name)
        if est is not None:
            for p in est.corners_px:
                cv2.circle(img, (round(p[0]), round(p[1])), 4, (0, 255, 0), 1)
            T_cw = invert_se3(est.T_world_cam)
            pc = world @ T_cw[:3, :3].T + T_cw[:3, 3]
            pc = pc[pc[:, 2] > 0]
            uv = pc @ np.asarray(view.camera.K).T
            for u, v in uv[:, :2] / uv[:, 2:]:
                cv2.drawMarker(img, (round(u), round(v)), (255, 0, 0), cv2.MARKER_CROSS, 6, 1)
            labels.append(f"{view.camera.name}: {len(est.corner_ids)} corners, rms {est.rms_px:.2f} px")
        else:
            labels.append(f"{view.camera.name}: target not found")
        tiles.append(img)
    cols = 2 if len(tiles) > 1 else 1
    return image_grid([tiles[i : i + cols] for i in range(0, len(tiles), cols)], path,
                      labels=[labels[i : i + cols] for i in range(0, len(labels), cols)], max_tile_width=640)
