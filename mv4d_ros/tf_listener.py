"""A minimal ``/tf_static`` listener (tf2_ros is not available as a wheel).

Subscribes ``tf2_msgs/TFMessage`` on ``/tf_static`` with TRANSIENT_LOCAL durability (so a node
started after the static publisher, or after ``ros2 bag play`` began, still gets the latched
transforms) and feeds ``mv4d_core.msgs.TFBuffer``. Dynamic ``/tf`` is not needed: the node only
looks up rigid ``base_link -> sensor`` transforms.
"""

from __future__ import annotations

import numpy as np

from mv4d_core.msgs import TFBuffer, TransformError
from mv4d_ros.qos import static_tf_qos


def tf2_msgs_available() -> bool:
    try:
        import tf2_msgs.msg  # noqa: F401
    except ImportError:
        return False
    return True


class StaticTfListener:
    """Keeps every static transform seen; :meth:`lookup` returns ``T_target_source`` or None."""

    def __init__(self, node, topic: str = "/tf_static", callback_group=None) -> None:
        from tf2_msgs.msg import TFMessage

        self.buffer = TFBuffer()
        self.errors = 0
        self.last_error = ""
        self._sub = node.create_subscription(TFMessage, topic, self._on_msg, static_tf_qos(),
                                             callback_group=callback_group)

    def destroy(self, node) -> None:
        node.destroy_subscription(self._sub)

    def _on_msg(self, msg) -> None:
        try:
            self.buffer.add_tf_message(msg, static=True)
        except TransformError as e:
            self.errors += 1
            self.last_error = str(e)

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        try:
            return self.buffer.lookup(target, source)
        except TransformError:
            return None
