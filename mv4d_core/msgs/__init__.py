"""ROS messages <-> numpy, by field name (works on rosbags dataclasses and rclpy messages alike).

Reading needs no backend; building messages goes through :class:`MsgFactory` (``rosbags`` or
``rclpy``, the latter imported only when asked for).
"""

from mv4d_core.msgs.camera_info import camera_info_to_camera, camera_to_camera_info
from mv4d_core.msgs.errors import (ImageEncodingError, ImageSizeError, MessageError, PointCloudError,
                                   TransformError)
from mv4d_core.msgs.factory import MsgFactory, default_factory
from mv4d_core.msgs.image import (ENCODINGS, any_image_to_rgb, array_to_image, compressed_to_rgb, depth_to_image,
                                  image_to_array, image_to_depth_m, image_to_rgb, rgb_to_compressed, rgb_to_image)
from mv4d_core.msgs.pointcloud2 import (DATATYPES, XYZCloud, array_to_pointcloud2, create_cloud, create_cloud_xyz32,
                                        dtype_from_fields, fields_from_dtype, pointcloud2_to_array, read_points,
                                        read_points_numpy, read_xyz, xyz_to_pointcloud2)
from mv4d_core.msgs.stamps import header_stamp_ns, ns_to_sec_nanosec, stamp_to_ns
from mv4d_core.msgs.tf import (StampedTransform, TFBuffer, interpolate_transform, make_tf_message,
                               matrix_to_odometry, matrix_to_transform_stamped, odometry_to_matrix,
                               tf_message_to_list, transform_to_matrix)

__all__ = [
    "MsgFactory", "default_factory", "MessageError", "ImageEncodingError", "ImageSizeError", "PointCloudError",
    "TransformError", "stamp_to_ns", "ns_to_sec_nanosec", "header_stamp_ns",
    "ENCODINGS", "image_to_array", "image_to_rgb", "image_to_depth_m", "array_to_image", "rgb_to_image",
    "depth_to_image", "compressed_to_rgb", "rgb_to_compressed", "any_image_to_rgb",
    "camera_info_to_camera", "camera_to_camera_info",
    "DATATYPES", "dtype_from_fields", "fields_from_dtype", "read_points", "pointcloud2_to_array",
    "read_points_numpy", "read_xyz", "XYZCloud", "array_to_pointcloud2", "create_cloud", "create_cloud_xyz32",
    "xyz_to_pointcloud2",
    "StampedTransform", "TFBuffer", "transform_to_matrix", "matrix_to_transform_stamped", "tf_message_to_list",
    "make_tf_message", "odometry_to_matrix", "matrix_to_odometry", "interpolate_transform",
]
