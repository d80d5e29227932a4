"""Error types raised by the message conversions; every message names the offending field."""

from __future__ import annotations


class MessageError(ValueError):
    """A ROS message cannot be converted; the text names the message type and field."""


class ImageEncodingError(MessageError):
    """``Image.encoding`` (or ``CompressedImage.format``) is not supported; the text names it."""


class ImageSizeError(MessageError):
    """``height``/``width``/``step``/``data`` of an image disagree."""


class PointCloudError(MessageError):
    """A ``PointCloud2`` layout (fields, steps, data length) is invalid."""


class TransformError(MessageError, LookupError):
    """A transform is malformed or cannot be resolved in a TF buffer (names both frames)."""
