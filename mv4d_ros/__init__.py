"""Thin ROS 2 layer over mv4d_core: nodes, parameters, QoS, diagnostics."""
