"""Message conversion benchmark: PointCloud2 decode/encode and Image decode.

Usage: ``python -m bench.bench_msgs [--out out/bench/msgs.json] [--points 300000] [--repeat 7]``.
Target: PointCloud2 decode/encode of 300k points >= 5x faster than a per-point Python ``struct``
loop and close to a plain numpy copy of the same bytes (the floor for anything that must own
its output). All baselines run in the same process on the same message; times are the best of
``--repeat`` runs (the loop baselines run once: they take seconds). Single-threaded BLAS.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bench.common import best_of, write_result  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/bench/msgs.json")
    ap.add_argument("--points", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--bag-frames", type=int, default=10, help="frames for the bag round trip (0 = skip)")
    args = ap.parse_args(argv)

    from mv4d_core.msgs import (MsgFactory, image_to_array, image_to_rgb, read_points, read_xyz, rgb_to_image,
                                xyz_to_pointcloud2)

    F = MsgFactory.rosbags()
    rng = np.random.default_rng(0)
    P = args.points
    xyz = rng.normal(size=(P, 3)).astype(np.float32) * 20
    intensity = rng.random(P).astype(np.float32)
    t_off = rng.random(P).astype(np.float32) * 0.1
    msg = xyz_to_pointcloud2(xyz, 1, "lidar", extra={"intensity": intensity, "t": t_off}, factory=F)
    data = np.asarray(msg.data)
    ps = msg.point_step
    res: dict = {"points": P, "point_step": ps, "bytes": int(data.size)}

    # ------------------------------------------------------------- PointCloud2 decode
    def decode_mv4d():
        return read_xyz(msg, ["intensity", "t"])

    def decode_loop():
        buf = data.tobytes()
        unpack = struct.Struct("<fffff").unpack_from
        rows = [unpack(buf, i * ps) for i in range(P)]
        out = np.array(rows, dtype=np.float32)
        return out[:, :3], out[:, 3], out[:, 4]

    def numpy_copy():
        return np.frombuffer(data, np.uint8).copy()

    got = decode_mv4d()
    ref = decode_loop()
    assert np.array_equal(got.xyz, ref[0]) and np.array_equal(got.fields["t"], ref[2]), "decoders disagree"
    t_mv4d = best_of(decode_mv4d, args.repeat)
    t_view = best_of(lambda: read_points(msg), args.repeat)
    t_loop = best_of(decode_loop, 1)
    t_copy = best_of(numpy_copy, args.repeat)
    res["pointcloud2_decode"] = {
        "mv4d_read_xyz_ms": t_mv4d * 1e3, "mv4d_read_points_view_ms": t_view * 1e3,
        "python_struct_loop_ms": t_loop * 1e3, "numpy_copy_ms": t_copy * 1e3,
        "speedup_vs_loop": t_loop / t_mv4d, "ratio_to_numpy_copy": t_mv4d / t_copy,
        "mpoints_per_s": P / t_mv4d / 1e6,
    }

    # ------------------------------------------------------------- PointCloud2 encode
    def encode_mv4d():
        return xyz_to_pointcloud2(xyz, 1, "lidar", extra={"intensity": intensity, "t": t_off}, factory=F, is_dense=True)

    def encode_loop():
        buf = bytearray(P * ps)
        pack = struct.Struct("<fffff").pack_into
        x, y, z = xyz[:, 0].tolist(), xyz[:, 1].tolist(), xyz[:, 2].tolist()
        it, tt = intensity.tolist(), t_off.tolist()
        for i in range(P):
            pack(buf, i * ps, x[i], y[i], z[i], it[i], tt[i])
        return buf

    enc = encode_mv4d()
    assert bytes(encode_loop()) == np.asarray(enc.data).tobytes(), "encoders disagree"
    e_mv4d = best_of(encode_mv4d, args.repeat)
    e_loop = best_of(encode_loop, 1)
    res["pointcloud2_encode"] = {
        "mv4d_xyz_to_pointcloud2_ms": e_mv4d * 1e3, "python_struct_loop_ms": e_loop * 1e3,
        "numpy_copy_ms": t_copy * 1e3, "speedup_vs_loop": e_loop / e_mv4d, "ratio_to_numpy_copy": e_mv4d / t_copy,
    }

    # ------------------------------------------------------------- Image decode (1600x900, nuScenes size)
    rgb = rng.integers(0, 256, (900, 1600, 3), dtype=np.uint8)
    img = rgb_to_image(rgb, factory=F)
    bgr = rgb_to_image(rgb, factory=F, encoding="bgr8")
    depth = F.image(F.header(), 900, 1600, "32FC1", 0, 1600 * 4 + 64,
                    rng.integers(0, 256, 900 * (1600 * 4 + 64), dtype=np.uint8))  # padded rows
    img_bytes = np.asarray(img.data)
    i_rgb = best_of(lambda: image_to_rgb(img), args.repeat)
    i_bgr = best_of(lambda: image_to_rgb(bgr), args.repeat)
    i_depth = best_of(lambda: image_to_array(depth), args.repeat)
    i_copy = best_of(lambda: img_bytes.copy(), args.repeat)
    image = {"rgb8_to_rgb_ms": i_rgb * 1e3, "bgr8_to_rgb_ms": i_bgr * 1e3, "32FC1_padded_ms": i_depth * 1e3,
             "numpy_copy_ms": i_copy * 1e3, "rgb8_ratio_to_numpy_copy": i_rgb / i_copy}
    try:
        from rosbags.image import message_to_cvimage

        i_rb = best_of(lambda: message_to_cvimage(img, "rgb8"), args.repeat)
        image["rosbags_image_rgb8_ms"] = i_rb * 1e3
    except Exception as e:  # optional reference only
        image["rosbags_image_error"] = repr(e)
    res["image_decode_1600x900"] = image

    # ------------------------------------------------------------- bag round trip (6 cameras 450x800 + 30k points)
    if args.bag_frames:
        import tempfile

        from mv4d_core.data.frame import FrameRecord
        from mv4d_core.data.rosbag_io import ReadStats, read_frames, write_frames
        from mv4d_core.geometry.transforms import yaw_transform

        n_cam, bag = 6, {}
        K = np.array([[600.0, 0, 399.5], [0, 600.0, 224.5], [0, 0, 1]])
        frames = [FrameRecord(stamp_ns=10**18 + k * 10**8, camera_names=[f"CAM_{i}" for i in range(n_cam)],
                              images=rng.integers(0, 256, (n_cam, 450, 800, 3), dtype=np.uint8),
                              intrinsics=np.stack([K] * n_cam),
                              T_base_cam=np.stack([yaw_transform(i) for i in range(n_cam)]),
                              T_world_base=yaw_transform(0.01 * k, (k, 0, 0)),
                              lidar_xyz=xyz[:30_000], lidar_intensity=intensity[:30_000])
                  for k in range(args.bag_frames)]
        for storage in ("sqlite3", "mcap"):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                write_frames(Path(tmp) / "bag", frames, storage=storage)
                t_w = time.perf_counter() - t0
                stats = ReadStats()
                t0 = time.perf_counter()
                n = sum(1 for _ in read_frames(Path(tmp) / "bag", stats=stats))
                t_r = time.perf_counter() - t0
                assert n == len(frames), stats.summary()
                bag[storage] = {"write_frames_per_s": len(frames) / t_w, "read_frames_per_s": n / t_r}
        res["bag_round_trip_6x450x800"] = bag

    write_result(args.out, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
