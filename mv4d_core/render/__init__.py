"""Differentiable NeuS-style rendering of voxel SDF fields (rays -> sampler -> field -> alpha -> composite)."""

from mv4d_core.render.alpha import Sharpness, annealed_slope, neus_alpha, section_sdf, slope_along_ray
from mv4d_core.render.composite import composite, transmittance
from mv4d_core.render.field import sample_volume
from mv4d_core.render.fused import fused_neus_composite, triton_available
from mv4d_core.render.rays import RayBundle, lattice_rays, pixel_lattice, rays_from_cameras
from mv4d_core.render.renderer import RenderOutputs, render_rays
from mv4d_core.render.sampler import ray_aabb, sample_points, stratified_samples
from mv4d_core.render.sdf_grad import eikonal_residual, sdf_gradient, sdf_second_derivatives

__all__ = ["Sharpness", "annealed_slope", "neus_alpha", "section_sdf", "slope_along_ray", "composite",
           "transmittance", "sample_volume", "fused_neus_composite", "triton_available", "RayBundle",
           "lattice_rays", "pixel_lattice", "rays_from_cameras", "RenderOutputs", "render_rays", "ray_aabb", "sample_points",
           "stratified_samples", "eikonal_residual", "sdf_gradient", "sdf_second_derivatives"]
