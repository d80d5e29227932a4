"""Point clouds to files: binary PLY (write + read) and a PNG render.

The render uses open3d's ``OffscreenRenderer`` (headless; Vulkan/llvmpipe on a CPU machine) and
falls back to a matplotlib 3D scatter when open3d cannot be imported or cannot open a renderer;
:func:`render_points` says which one drew the picture and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

_PLY_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray | None = None, comment: str = "") -> Path:
    """Binary little-endian PLY with ``xyz`` ``(P, 3)`` float32 and ``rgb`` ``(P, 3)`` uint8 (grey if None)."""
    xyz = np.asarray(xyz, np.float32).reshape(-1, 3)
    rgb = np.full((len(xyz), 3), 200, np.uint8) if rgb is None else np.asarray(rgb, np.uint8).reshape(-1, 3)
    if len(rgb) != len(xyz):
        raise ValueError(f"write_ply: {len(xyz)} points but {len(rgb)} colours")
    rows = np.empty(len(xyz), _PLY_DTYPE)
    rows["x"], rows["y"], rows["z"] = xyz.T
    rows["red"], rows["green"], rows["blue"] = rgb.T
    header = ["ply", "format binary_little_endian 1.0"]
    header += [f"comment {line}" for line in comment.splitlines() if line]
    header += [f"element vertex {len(xyz)}", "property float x", "property float y", "property float z",
               "property uchar red", "property uchar green", "property uchar blue", "end_header"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(rows.tobytes())
    return path


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz (P, 3) float32, rgb (P, 3) uint8)`` from a PLY written by :func:`write_ply`."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic / 'end_header')")
    header = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: only binary_little_endian PLY is supported")
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    body = data[end + len(b"end_header\n"):]
    if len(body) != count * _PLY_DTYPE.itemsize:
        raise ValueError(f"{path}: {count} vertices declared but {len(body)} bytes of data")
    rows = np.frombuffer(body, _PLY_DTYPE)
    xyz = np.stack([rows["x"], rows["y"], rows["z"]], -1)
    rgb = np.stack([rows["red"], rows["green"], rows["blue"]], -1)
    return xyz, rgb


@dataclass
class RenderResult:
    """Where the picture went, which backend drew it (``open3d`` / ``matplotlib``) and why a fallback."""

    path: Path
    backend: str
    note: str = ""


def render_points(path: str | Path, clouds: list[tuple[np.ndarray, np.ndarray, float]], title: str = "",
                  size: tuple[int, int] = (960, 640), backend: str = "auto") -> RenderResult:
    """Render ``clouds`` = ``[(xyz (P, 3) base_link, rgb (P, 3) uint8, point_size_px), ...]`` from a
    chase camera behind and above the ego vehicle (base_link x forward, z up).

    ``backend``: ``auto`` (open3d, else matplotlib), ``open3d`` or ``matplotlib``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    note = ""
    if backend in ("auto", "open3d"):
        try:
            _render_open3d_subprocess(path, clouds, size)
            return RenderResult(path, "open3d")
        except Exception as e:  # noqa: BLE001 - any failure to import or open a renderer -> fallback
            if backend == "open3d":
                raise
            note = f"open3d could not render ({type(e).__name__}: {e}); drew a matplotlib 3D scatter instead"
    _render_matplotlib(path, clouds, title, size)
    return RenderResult(path, "matplotlib", note)


# Chase camera: 22 m behind, 16 m up, looking 12 m ahead of the vehicle.
_EYE = (-22.0, 0.0, 16.0)
_CENTER = (12.0, 0.0, 0.0)


def _render_open3d_subprocess(path: Path, clouds, size, timeout_s: float = 120.0) -> None:
    """Render in a child process: a renderer that cannot find a GPU/Vulkan driver may abort the
    whole process, which must not take the demo down with it."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "clouds.npz"
        arrays = {}
        for i, (xyz, rgb, point_size) in enumerate(clouds):
            arrays[f"xyz{i}"] = np.asarray(xyz, np.float32)
            arrays[f"rgb{i}"] = np.asarray(rgb, np.uint8)
            arrays[f"size{i}"] = np.float32(point_size)
        np.savez(npz, **arrays)
        proc = subprocess.run([sys.executable, "-m", "mv4d_core.demo.pointcloud_render", str(npz), str(path),
                               str(size[0]), str(size[1])], capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not path.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise RuntimeError(tail[0])


def _main(argv: list[str]) -> int:
    """``python -m mv4d_core.demo.pointcloud_render CLOUDS.npz OUT.png W H`` (used by the subprocess)."""
    npz, out, w, h = argv
    with np.load(npz) as z:
        n = len([k for k in z.files if k.startswith("xyz")])
        clouds = [(z[f"xyz{i}"], z[f"rgb{i}"], float(z[f"size{i}"])) for i in range(n)]
    _render_open3d(Path(out), clouds, (int(w), int(h)))
    return 0


def _render_open3d(path: Path, clouds, size) -> None:
    import open3d as o3d
    from open3d.visualization import rendering

    renderer = rendering.OffscreenRenderer(*size)
    try:
        scene = renderer.scene
        scene.set_background([1.0, 1.0, 1.0, 1.0])
        # Tone mapping / post effects wash out unlit point colours: show the colours as given.
        scene.view.set_post_processing(False)
        for i, (xyz, rgb, point_size) in enumerate(clouds):
            if len(xyz) == 0:
                continue
            pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(xyz, np.float64)))
            pc.colors = o3d.utility.Vector3dVector(np.asarray(rgb, np.float64) / 255.0)
            mat = rendering.MaterialRecord()
            mat.shader = "defaultUnlit"
            mat.point_size = float(point_size)
            scene.add_geometry(f"cloud{i}", pc, mat)
        renderer.setup_camera(55.0, list(_CENTER), list(_EYE), [0.0, 0.0, 1.0])
        img = np.asarray(renderer.render_to_image())
    finally:
        del renderer
    if img.size == 0 or img.std() == 0:
        raise RuntimeError("open3d returned an empty image")
    import cv2

    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def _render_matplotlib(path: Path, clouds, title: str, size) -> None:
    from mv4d_core.demo.panels import _plt

    plt = _plt()
    fig = plt.figure(figsize=(size[0] / 80, size[1] / 80))
    ax = fig.add_subplot(projection="3d")
    for xyz, rgb, point_size in clouds:
        xyz = np.asarray(xyz)
        if len(xyz):
            ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=np.asarray(rgb) / 255.0, s=point_size, linewidths=0)
    ax.view_init(elev=30, azim=180)  # from behind the vehicle
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_zlabel("z [m]")
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
