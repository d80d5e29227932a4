"""Small helpers shared across mv4d_core packages (no torch, no ROS)."""
