"""The self-supervised training step (SelfOcc-style rendering losses plus LiDAR terms) as a ``Trainer`` ``step_fn``.

For a batch of :class:`~mv4d_core.training.data.TrainSample` triplets ``(t-1, t, t+1)``:

1. (temporal models) frame ``t-1`` runs without gradient; its ``state_volume`` is fed, ego-warped
   by the model, into the forward pass of frame ``t``;
2. a jittered ``rows x cols`` ray lattice per current camera is rendered through the SDF field
   (:func:`mv4d_core.render.render_rays`, NeuS alpha with the model's learnable sharpness, cos-annealed);
3. with LiDAR, extra rays at random LiDAR pixels are rendered for the depth L1;
4. the batch dictionary of :data:`mv4d_core.losses.BATCH_KEYS` is assembled and the
   :class:`~mv4d_core.losses.LossSet` (temporal photometric to t±1, flow-aware; rendered RGB;
   depth-head consistency; LiDAR depth; fused-LiDAR focal occupancy; Eikonal/Hessian; edge-aware
   smoothness; flow TV + sparsity) plus the recipe extras (LiDAR Chamfer scene flow, depth head at
   LiDAR pixels) is evaluated. Losses whose inputs a batch lacks (no LiDAR) are skipped that step.

All randomness (lattice jitter, sample jitter, LiDAR pixel choice) comes from the global torch RNG,
which the trainer checkpoints, so resume stays bit-exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from mv4d_core.geometry.transforms import invert_transform
from mv4d_core.losses import LossSet, build_loss_set, sample_images
from mv4d_core.losses.lidar_depth import LidarDepthLoss
from mv4d_core.models.heads import occupancy_logits_from_sdf
from mv4d_core.models.inputs import ModelInputs
from mv4d_core.render import lattice_rays, rays_from_cameras, render_rays, sample_volume
from mv4d_core.losses.flow_chamfer import ChamferFlowLoss, FlowCycleLoss, GroundStaticFlowLoss
from mv4d_core.losses.flow_distill import FlowDistillationLoss
from mv4d_core.losses.regularizers import SparsityLoss
from mv4d_core.training.trainer import StepResult


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def _stack(batch, k: int, attr: str) -> torch.Tensor:
    return torch.from_numpy(np.stack([getattr(s.frames[k], attr) for s in batch]))


def depth_map_uv(uv: torch.Tensor, image_hw: tuple[int, int], depth_hw: tuple[int, int]) -> torch.Tensor:
    """Image pixels ``(..., 2)`` -> pixels of a depth map of ``depth_hw`` (centre rule ``(u+0.5) s - 0.5``)."""
    (H, W), (h, w) = image_hw, depth_hw
    scale = uv.new_tensor([w / W, h / H])
    return (uv + 0.5) * scale - 0.5


class SelfSupervisedStep:
    """``step_fn(model, batch, step) -> StepResult`` for :class:`~mv4d_core.training.Trainer`.

    Args:
        train_cfg: a :class:`~mv4d_core.training.config.TrainConfig` (losses, extra_losses, rays).
        panel_camera: camera index shown in the TensorBoard panels.
    """

    def __init__(self, train_cfg, panel_camera: int = 1):
        self.cfg = train_cfg
        grid = train_cfg.model.grid
        losses = dict(build_loss_set(train_cfg.losses, grid).losses.items())
        x = train_cfg.extra_losses
        read = x.flow_point_read
        if x.flow_chamfer > 0:
            losses["flow_chamfer"] = ChamferFlowLoss(x.flow_chamfer, grid=grid, truncate_m=x.chamfer_truncate_m,
                                                     read=read)
        if x.flow_ground_static > 0:
            losses["flow_ground_static"] = GroundStaticFlowLoss(x.flow_ground_static, grid=grid, read=read)
        if x.flow_cycle > 0:
            losses["flow_cycle"] = FlowCycleLoss(x.flow_cycle, grid=grid, read=read)
        if x.depth_residual > 0:
            losses["depth_residual"] = SparsityLoss(x.depth_residual, reads={"x": "depth_residual"})
        if x.flow_distill > 0:
            losses["flow_distill"] = FlowDistillationLoss(x.flow_distill, grid=grid,
                                                          moving_weight=x.flow_distill_moving_weight, read=read)
        if x.lidar_depth_head > 0:
            losses["lidar_depth_head"] = LidarDepthLoss(
                x.lidar_depth_head, reads={"pred_depth_m": "lidar_head_depth_m", "target_depth_m": "lidar_head_target_m",
                                           "valid": "lidar_head_valid"}, relative=x.lidar_depth_head_relative)
        if not losses:
            raise ValueError("every loss weight is 0: nothing to train")
        self.losses = losses
        self.panel_camera = panel_camera

    # ------------------------------------------------------------------ helpers
    def _available(self, batch: dict) -> LossSet:
        """The losses whose required inputs are in ``batch`` (LiDAR terms drop out on camera-only data)."""
        keep = {}
        for name, loss in self.losses.items():
            need = [key for arg, key in loss.reads.items() if arg not in loss.optional_reads]
            if all(batch.get(key) is not None for key in need):
                keep[name] = loss
        return LossSet(keep)

    def __call__(self, model: torch.nn.Module, batch: Sequence, step: int) -> StepResult:
        rc = self.cfg.rays
        core = _unwrap(model)
        mcfg = core.cfg
        grid = mcfg.grid
        dev = next(core.parameters()).device
        B = len(batch)
        N, H, W = mcfg.num_cameras, mcfg.image_height, mcfg.image_width
        V = B * N

        imgs = [_stack(batch, k, "images").to(dev).float().div_(255.0) for k in range(3)]    # (B, N, 3, H, W)
        K = _stack(batch, 1, "K").to(dev).float()
        T_bc = _stack(batch, 1, "T_base_cam").to(dev).float()
        T_wb = [np.stack([s.frames[k].T_world_base for s in batch]) for k in range(3)]
        T_prev_cur = torch.from_numpy(invert_transform(T_wb[0]) @ T_wb[1]).float().to(dev)     # (B, 4, 4)
        T_next_cur = torch.from_numpy(invert_transform(T_wb[2]) @ T_wb[1]).float().to(dev)
        stamps = np.array([[s.frames[k].stamp_s for k in range(3)] for s in batch])             # (B, 3)
        dt_prev, dt_next = stamps[:, 0] - stamps[:, 1], stamps[:, 2] - stamps[:, 1]

        # ---- forward (frame t-1 without gradient feeds the temporal fusion)
        inputs = ModelInputs(imgs[1], K, T_bc)
        if mcfg.lidar.enabled:
            inputs = self._with_lidar(inputs, batch, mcfg, dev)
        if rc.temporal_prev and mcfg.temporal:
            with torch.no_grad():
                prev = core(ModelInputs(imgs[0], _stack(batch, 0, "K").to(dev).float(),
                                        _stack(batch, 0, "T_base_cam").to(dev).float()))
            inputs = inputs.with_previous(prev.state_volume.detach(), T_prev_cur)
        out = model(inputs)

        # ---- lattice rays of the current cameras
        rows, cols, S = rc.rows, rc.cols, rc.num_samples
        cos = 1.0 if rc.cos_anneal_steps <= 0 else min(1.0, step / rc.cos_anneal_steps)
        rays, uv = lattice_rays(K, T_bc, H, W, rows, cols, jitter=True)
        r = render_rays(out.field, grid, rays, out.inv_s, num_samples=S, near_m=rc.near_m, jitter=True,
                        cos_anneal=cos, backend=rc.backend)

        def lat(x, *tail):
            return x.reshape(V, rows, cols, *tail)

        uv_v = uv.reshape(V, rows, cols, 2)
        cur_v = imgs[1].reshape(V, 3, H, W)
        ray_rgb, _ = sample_images(cur_v, uv_v)
        h4, w4 = out.depth_m.shape[-2:]
        head_v = out.depth_m.reshape(V, 1, h4, w4)
        ray_head, _ = sample_images(head_v, depth_map_uv(uv_v, (H, W), (h4, w4)))
        R = rays.shape[1]
        ray_flow = sample_volume(out.flow_mps, r.points.reshape(B, R * S, 3), grid)               # (B, R*S, 3)
        T_adj = torch.stack([T_prev_cur, T_next_cur])[:, :, None].expand(2, B, N, 4, 4).reshape(2, V, 4, 4)
        data = {
            "ray_points_base": lat(r.points, S, 3), "ray_weights": lat(r.weights, S), "ray_rgb": ray_rgb,
            "ray_uv": uv_v, "ray_valid": lat(r.hit),
            "adj_images": torch.stack([imgs[0].reshape(V, 3, H, W), imgs[2].reshape(V, 3, H, W)]),
            "adj_intrinsics": K.reshape(V, 3, 3), "T_base_cam": T_bc.reshape(V, 4, 4), "T_adj_cur": T_adj,
            "ray_flow_mps": ray_flow.reshape(V, rows, cols, S, 3),
            # one dt per adjacent frame: the batch mean (frame rates are constant within a recipe)
            "adj_dt_s": torch.tensor([dt_prev.mean(), dt_next.mean()], dtype=torch.float32, device=dev),
            "ray_rgb_rendered": lat(r.rgb, 3), "ray_depth_m": lat(r.depth_m), "ray_depth_head_m": ray_head[..., 0],
            "occupancy_logits": occupancy_logits_from_sdf(out.sdf, out.inv_s, mcfg.occupancy_margin_m),
            "sdf": out.sdf, "flow_mps": out.flow_mps, "depth_residual": out.depth_residual,
            "T_next_cur": T_next_cur, "next_dt_s": torch.from_numpy(dt_next).float(),
        }
        if all(s.occupancy_labels is not None for s in batch):
            data["occupancy_labels"] = torch.from_numpy(np.stack([s.occupancy_labels for s in batch])).to(dev)
        if all(s.chamfer_src is not None and s.chamfer_dst is not None for s in batch):
            data["chamfer_src"] = [torch.from_numpy(s.chamfer_src).to(dev) for s in batch]
            data["chamfer_dst"] = [torch.from_numpy(s.chamfer_dst).to(dev) for s in batch]
        if all(s.ground_points is not None for s in batch):
            data["ground_points"] = [torch.from_numpy(s.ground_points).to(dev) for s in batch]
        if all(s.flow_teacher_points is not None for s in batch):
            data["flow_teacher_points"] = [torch.from_numpy(s.flow_teacher_points).to(dev) for s in batch]
            data["flow_teacher_m"] = [torch.from_numpy(s.flow_teacher_m).to(dev) for s in batch]
        self._lidar_rays(batch, data, out, r, K, T_bc, (H, W), step, cos, dev)
        if "flow_cycle" in self.losses and "chamfer_src" in data and mcfg.lidar.enabled:
            data["next_flow_mps"] = self._next_flow(core, batch, imgs[2], out, T_next_cur, mcfg, dev)

        losses = self._available(data)
        terms_t = losses(data, step)
        loss = terms_t["total"]
        terms = {k: float(v.detach()) for k, v in terms_t.items() if k != "total"}
        with torch.no_grad():
            terms["stats/inv_s"] = float(out.inv_s)
            terms["stats/render_depth_m"] = float(r.depth_m[r.hit].mean()) if r.hit.any() else float("nan")
            terms["stats/flow_mps"] = float(out.flow_mps.norm(dim=1).mean())
            terms["stats/occupied_fraction"] = float((out.occupancy_prob >= 0.5).float().mean())
        return StepResult(loss, terms, self._panels(ray_rgb, data, rows, cols, N))

    @torch.no_grad()
    def _next_flow(self, core, batch, images_next: torch.Tensor, out, T_next_cur: torch.Tensor, mcfg,
                   dev) -> torch.Tensor:
        """Frame t+1's flow ``(B, 3, X, Y, Z)`` m/s, the target of the cycle term: the network on frame
        t+1's cameras and full sweep (frame t's sweep as its previous one, frame t's volume as its
        temporal state), without gradient."""
        inputs = ModelInputs(images_next, _stack(batch, 2, "K").to(dev).float(),
                             _stack(batch, 2, "T_base_cam").to(dev).float())
        inputs = self._with_lidar(inputs, batch, mcfg, dev, cur=2, prev=1, masked=False)
        if mcfg.temporal:
            inputs = inputs.with_previous(out.state_volume.detach(), torch.linalg.inv(T_next_cur))
        return core(inputs).flow_mps

    def _with_lidar(self, inputs: ModelInputs, batch, mcfg, dev, cur: int = 1, prev: int = 0,
                    masked: bool = True) -> ModelInputs:
        """The fusion model's LiDAR inputs of frame ``cur`` of each triplet from its sweep (masked:
        masked LiDAR modelling) and frame ``prev``'s sweep; the masks draw from the global torch RNG
        (checkpointed: resume stays exact)."""
        from mv4d_core.models.lidar_inputs import Sweep, build_lidar_inputs, volume_channels
        from mv4d_core.training.lidar_masking import keep_mask

        B, N = len(batch), inputs.num_cameras
        H, W = inputs.image_size
        vols = np.zeros((B, volume_channels(mcfg.lidar.previous_sweeps)) + tuple(mcfg.grid.shape), np.float32)
        depths = np.zeros((B, N, 3, H, W), np.float32)
        valid = np.zeros(B, np.float32)
        for b, s in enumerate(batch):
            prev_f, cur_f = s.frames[prev], s.frames[cur]
            if cur_f.lidar_xyz is None or len(cur_f.lidar_xyz) == 0:
                continue
            if masked:
                rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))
                keep = keep_mask(cur_f.lidar_xyz, cur_f.lidar_ring, cur_f.lidar_origin, self.cfg.lidar_masking, rng)
            else:
                keep = np.ones(len(cur_f.lidar_xyz), bool)
            if not keep.any():
                continue
            inten = None if cur_f.lidar_intensity is None else cur_f.lidar_intensity[keep]
            sweep = Sweep(cur_f.lidar_xyz[keep], inten, cur_f.T_world_base, cur_f.stamp_ns)
            previous = []
            if prev_f.lidar_xyz is not None and len(prev_f.lidar_xyz):
                pk = (rng.random(len(prev_f.lidar_xyz)) >= rng.uniform(0.0, self.cfg.lidar_masking.point_drop)
                      if masked else slice(None))
                previous = [Sweep(prev_f.lidar_xyz[pk], None, prev_f.T_world_base, prev_f.stamp_ns)]
            built = build_lidar_inputs(sweep, previous, cur_f.lidar_origin, cur_f.K, cur_f.T_base_cam, (H, W),
                                       mcfg.lidar, mcfg.grid)
            if built is not None:
                vols[b], depths[b] = built
                valid[b] = 1.0
        return replace(inputs, lidar_volume=torch.from_numpy(vols).to(dev),
                       lidar_depth=torch.from_numpy(depths).to(dev), lidar_valid=torch.from_numpy(valid).to(dev))

    def _lidar_rays(self, batch, data: dict, out, r, K, T_bc, image_hw, step: int, cos: float, dev) -> None:
        """Random LiDAR pixels per camera (with replacement) of the full current sweep: ``lidar_rays``
        rendered for the rendered-depth L1 (``lidar_*`` keys) and ``lidar_head_rays`` (default the same)
        where the depth head is read (``lidar_head_*`` keys)."""
        rc = self.cfg.rays
        if not all(s.frames[1].lidar_count.sum() > 0 for s in batch):
            return
        B, N = len(batch), K.shape[1]

        def draw(M):
            uvs, tgt = torch.zeros(B, N, M, 2), torch.zeros(B, N, M)
            for b, s in enumerate(batch):
                f = s.frames[1]
                for c in range(N):
                    n = int(f.lidar_count[c])
                    if n == 0:
                        continue
                    idx = torch.randint(n, (M,))
                    uvs[b, c] = torch.from_numpy(f.lidar_uv[c, :n])[idx]
                    tgt[b, c] = torch.from_numpy(f.lidar_depth_m[c, :n])[idx]
            return uvs.to(dev), tgt.to(dev)

        M = rc.lidar_rays
        if "lidar_depth" in self.losses and M > 0:
            uvs, tgt = draw(M)
            data["lidar_depth_m"] = tgt.reshape(B * N, M)
            data["lidar_depth_valid"] = tgt.reshape(B * N, M) > 0
            lrays = rays_from_cameras(K, T_bc, uvs)
            lr = render_rays(out.field, self.cfg.model.grid, lrays, out.inv_s, num_samples=rc.lidar_num_samples,
                             near_m=rc.near_m, jitter=True, cos_anneal=cos, backend=rc.backend)
            data["lidar_ray_depth_m"] = lr.depth_m.reshape(B * N, M)
        Mh = rc.lidar_head_rays or M
        if "lidar_depth_head" in self.losses and Mh > 0:
            uvs, tgt = draw(Mh)
            h, w = out.depth_m.shape[-2:]
            head = out.depth_m.reshape(B * N, 1, h, w)
            vals, _ = sample_images(head, depth_map_uv(uvs.reshape(B * N, 1, Mh, 2), image_hw, (h, w)))
            data["lidar_head_depth_m"] = vals.reshape(B * N, Mh)
            data["lidar_head_target_m"] = tgt.reshape(B * N, Mh)
            data["lidar_head_valid"] = tgt.reshape(B * N, Mh) > 0

    def _panels(self, ray_rgb, data: dict, rows: int, cols: int, N: int) -> dict[str, torch.Tensor]:
        """(3, H, W) TensorBoard panels of one camera: input | rendered RGB | rendered depth | depth head."""
        c = min(self.panel_camera, N - 1)
        with torch.no_grad():
            def depth_img(d):
                d = d.float().clamp_min(0)
                return (d / d.max().clamp_min(1e-6)).expand(3, -1, -1)
            tiles = [ray_rgb[c].permute(2, 0, 1), data["ray_rgb_rendered"][c].permute(2, 0, 1).clamp(0, 1),
                     depth_img(data["ray_depth_m"][c][None]), depth_img(data["ray_depth_head_m"][c][None])]
            panel = torch.cat(tiles, 2)[None].float()
            panel = F.interpolate(panel, scale_factor=4, mode="nearest")[0]
        return {"render/input|rgb|depth|head": panel.cpu()}
