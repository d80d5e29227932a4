"""Self-supervised losses for mv4d (tensor-level; see each module for shapes and frames).

Each loss is a :class:`WeightedLoss` (``weight``, ``enable_after``, ``reads``); a
:class:`LossSet` built from a :class:`LossConfig` sums the enabled ones.
"""

from mv4d_core.losses.base import LossSet, WeightedLoss
from mv4d_core.losses.config import BATCH_KEYS, LOSS_NAMES, LossConfig, build_loss_set
from mv4d_core.losses.lidar_depth import LidarDepthLoss, LidarProjection, lidar_depth_image, project_lidar_to_cameras
from mv4d_core.losses.masked_modelling import (RenderedReconstructionLoss, VolumeReconstructionLoss, apply_patch_mask,
                                               random_patch_mask, warp_neighbours_to_key)
from mv4d_core.losses.occupancy_focal import (OCC_FREE, OCC_OCCUPIED, OCC_UNKNOWN, OccupancyFocalLoss,
                                              fuse_lidar_sweeps, fused_occupancy_labels, occupancy_labels_from_points,
                                              sigmoid_focal_loss)
from mv4d_core.losses.photometric import INVALID_COST, PhotometricLoss, PhotometricTerms, photometric_terms, sample_images
from mv4d_core.losses.render_consistency import DepthConsistencyLoss, RenderedRGBLoss, depth_to_points_base
from mv4d_core.losses.regularizers import (EdgeAwareSmoothnessLoss, EikonalLoss, FlowSmoothnessLoss,
                                           HessianLoss, SparsityLoss, edge_aware_smoothness, flow_total_variation,
                                           interior_mask)
from mv4d_core.losses.ssim import SSIM, ssim_dissimilarity, ssim_map

__all__ = [n for n in dir() if not n.startswith("_")]
