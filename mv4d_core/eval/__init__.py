"""Evaluation: metrics (occupancy, depth, flow), baselines, the one scoring path and Markdown reports."""

from mv4d_core.eval.baselines import ConstantDepthBaseline, all_free_occupancy, ground_plane_depth, ground_slab_occupancy
from mv4d_core.eval.metrics import (DEPTH_KEYS, FLOW_KEYS, DepthMetrics, FlowMetrics, OccupancyMetrics, depth_metrics,
                                    flow_point_stats, occupancy_iou, resample_to_grid, selfocc_protocol_labels,
                                    selfocc_protocol_occupied)
from mv4d_core.eval.report import markdown_report

__all__ = [n for n in dir() if not n.startswith("_")]
