"""Fused NeuS alpha + transmittance compositing with a hand-written backward.

One op replaces ``neus_alpha`` + ``composite``: ``(s_prev, s_next, inv_s, t, values) ->
(weights, depth_t, values_out, opacity)``. Autograd of the reference keeps ~10 ``(R, S)`` intermediates
alive per call; this op saves only its inputs and recomputes alpha/transmittance in backward.

Backward (per ray, ``q_i = 1 - a_i + eps``, ``T_i = prod_{j<i} q_j``, ``w_i = a_i T_i``, and ``g_i`` the
total upstream gradient on ``w_i``): ``dL/da_k = g_k T_k - (sum_{i>k} g_i w_i) / q_k``; then through
the clip, ``a = 1 - Phi(n) / (Phi(p) + 1e-5)`` and the sigmoids.

Two implementations of the same maths: a vectorised torch version (any device; the CPU "fused" path)
and a Triton kernel pair (one program per ray) used only for CUDA tensors when Triton is importable.
"""

from __future__ import annotations

import torch

from mv4d_core.render.alpha import ALPHA_EPS
from mv4d_core.render.composite import TRANSMITTANCE_EPS

try:  # Triton is optional: only CUDA builds of torch ship it.
    import triton
    import triton.language as tl
    HAS_TRITON = True
except Exception:  # noqa: BLE001 - ImportError or a broken install
    triton = None
    tl = None
    HAS_TRITON = False


def _forward_math(s_prev, s_next, inv_s, t):
    cp = torch.sigmoid(s_prev * inv_s)
    cn = torch.sigmoid(s_next * inv_s)
    raw = (cp - cn + ALPHA_EPS) / (cp + ALPHA_EPS)
    a = raw.clamp(0.0, 1.0)
    q = 1.0 - a + TRANSMITTANCE_EPS
    T = torch.cumprod(torch.cat([torch.ones_like(q[..., :1]), q], -1), -1)[..., :-1]
    return cp, cn, raw, a, q, T


def _no_autocast(x: torch.Tensor):
    # Under autocast the einsums would come out in bf16/fp16 while the saved inputs stay fp32, and the
    # backward would mix them; the op does its own maths in the inputs' precision instead.
    return torch.autocast(device_type=x.device.type, enabled=False)


class _FusedCompositeTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s_prev, s_next, inv_s, t, values):
        with torch.no_grad(), _no_autocast(values):
            _, _, _, a, _, T = _forward_math(s_prev, s_next, inv_s, t)
            w = a * T
            depth = (w * t).sum(-1)
            vals = torch.einsum("rs,rsc->rc", w, values.to(w.dtype))
            opacity = w.sum(-1)
        ctx.save_for_backward(s_prev, s_next, inv_s, t, values)
        return w, depth, vals, opacity

    @staticmethod
    def backward(ctx, g_w, g_depth, g_vals, g_opacity):
        s_prev, s_next, inv_s, t, values = ctx.saved_tensors
        with _no_autocast(values):
            grads = _FusedCompositeTorch._backward(s_prev, s_next, inv_s, t, values, g_w, g_depth, g_vals, g_opacity)
        return tuple(None if g is None else g.to(x.dtype) for g, x in zip(grads, (s_prev, s_next, inv_s, t, values)))

    @staticmethod
    def _backward(s_prev, s_next, inv_s, t, values, g_w, g_depth, g_vals, g_opacity):
        cp, cn, raw, a, q, T = _forward_math(s_prev, s_next, inv_s, t)
        w = a * T
        g = torch.zeros_like(w)
        if g_w is not None:
            g = g + g_w
        if g_depth is not None:
            g = g + g_depth[:, None] * t
        if g_vals is not None:
            g = g + torch.einsum("rc,rsc->rs", g_vals.to(w.dtype), values.to(w.dtype))
        if g_opacity is not None:
            g = g + g_opacity[:, None]
        gw = g * w
        suffix = gw.sum(-1, keepdim=True) - gw.cumsum(-1)                   # sum_{i>k} g_i w_i
        d_a = g * T - suffix / q
        d_raw = torch.where((raw >= 0) & (raw <= 1), d_a, torch.zeros_like(d_a))
        denom = cp + ALPHA_EPS
        d_p = d_raw * cn / denom ** 2 * cp * (1 - cp)
        d_n = -d_raw / denom * cn * (1 - cn)
        d_sp = d_p * inv_s
        d_sn = d_n * inv_s
        d_inv_s = (d_p * s_prev + d_n * s_next).sum().reshape(inv_s.shape)
        d_t = g_depth[:, None] * w if g_depth is not None else None
        d_v = w[..., None] * g_vals[:, None, :] if g_vals is not None else None
        return d_sp, d_sn, d_inv_s, d_t, d_v


if HAS_TRITON:
    @triton.jit
    def _fused_fwd_kernel(sp_ptr, sn_ptr, t_ptr, v_ptr, inv_s_ptr, w_ptr, d_ptr, vo_ptr, o_ptr, S, C,
                          ALPHA_E: tl.constexpr, TRANS_E: tl.constexpr,
                          BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
        r = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK_S)
        m = offs < S
        offc = tl.arange(0, BLOCK_C)
        mc = offc < C
        inv_s = tl.load(inv_s_ptr).to(tl.float32)
        sp = tl.load(sp_ptr + r * S + offs, mask=m, other=0.0).to(tl.float32)
        sn = tl.load(sn_ptr + r * S + offs, mask=m, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + r * S + offs, mask=m, other=0.0).to(tl.float32)
        cp = tl.sigmoid(sp * inv_s)
        cn = tl.sigmoid(sn * inv_s)
        raw = (cp - cn + ALPHA_E) / (cp + ALPHA_E)
        a = tl.minimum(tl.maximum(raw, 0.0), 1.0)
        a = tl.where(m, a, 0.0)
        logq = tl.log(1.0 - a + TRANS_E)
        T = tl.exp(tl.cumsum(logq, axis=0) - logq)                          # exclusive product
        w = a * T
        tl.store(w_ptr + r * S + offs, w, mask=m)
        tl.store(d_ptr + r, tl.sum(w * t, axis=0))
        tl.store(o_ptr + r, tl.sum(w, axis=0))
        v = tl.load(v_ptr + r * S * C + offs[:, None] * C + offc[None, :], mask=m[:, None] & mc[None, :],
                    other=0.0).to(tl.float32)
        tl.store(vo_ptr + r * C + offc, tl.sum(w[:, None] * v, axis=0), mask=mc)

    @triton.jit
    def _fused_bwd_kernel(sp_ptr, sn_ptr, t_ptr, v_ptr, inv_s_ptr, gw_ptr, gd_ptr, gv_ptr, go_ptr,
                          dsp_ptr, dsn_ptr, dt_ptr, dv_ptr, dinv_ptr, S, C,
                          ALPHA_E: tl.constexpr, TRANS_E: tl.constexpr,
                          BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
        r = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK_S)
        m = offs < S
        offc = tl.arange(0, BLOCK_C)
        mc = offc < C
        m2 = m[:, None] & mc[None, :]
        inv_s = tl.load(inv_s_ptr).to(tl.float32)
        sp = tl.load(sp_ptr + r * S + offs, mask=m, other=0.0).to(tl.float32)
        sn = tl.load(sn_ptr + r * S + offs, mask=m, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + r * S + offs, mask=m, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + r * S * C + offs[:, None] * C + offc[None, :], mask=m2, other=0.0).to(tl.float32)
        cp = tl.sigmoid(sp * inv_s)
        cn = tl.sigmoid(sn * inv_s)
        raw = (cp - cn + ALPHA_E) / (cp + ALPHA_E)
        a = tl.minimum(tl.maximum(raw, 0.0), 1.0)
        a = tl.where(m, a, 0.0)
        q = 1.0 - a + TRANS_E
        logq = tl.log(q)
        T = tl.exp(tl.cumsum(logq, axis=0) - logq)
        w = a * T
        gd = tl.load(gd_ptr + r).to(tl.float32)
        go = tl.load(go_ptr + r).to(tl.float32)
        gvo = tl.load(gv_ptr + r * C + offc, mask=mc, other=0.0).to(tl.float32)
        g = tl.load(gw_ptr + r * S + offs, mask=m, other=0.0).to(tl.float32) + gd * t + go
        g += tl.sum(v * gvo[None, :], axis=1)
        g = tl.where(m, g, 0.0)
        gwp = g * w
        suffix = tl.sum(gwp, axis=0) - tl.cumsum(gwp, axis=0)
        d_a = g * T - suffix / q
        d_raw = tl.where((raw >= 0.0) & (raw <= 1.0) & m, d_a, 0.0)
        denom = cp + ALPHA_E
        d_p = d_raw * cn / (denom * denom) * cp * (1.0 - cp)
        d_n = -d_raw / denom * cn * (1.0 - cn)
        tl.store(dsp_ptr + r * S + offs, d_p * inv_s, mask=m)
        tl.store(dsn_ptr + r * S + offs, d_n * inv_s, mask=m)
        tl.store(dt_ptr + r * S + offs, gd * w, mask=m)
        tl.store(dv_ptr + r * S * C + offs[:, None] * C + offc[None, :], w[:, None] * gvo[None, :], mask=m2)
        tl.store(dinv_ptr + r, tl.sum(d_p * sp + d_n * sn, axis=0))

    def _blocks(S: int, C: int) -> tuple[int, int]:
        return triton.next_power_of_2(max(S, 16)), triton.next_power_of_2(max(C, 1))

    class _FusedCompositeTriton(torch.autograd.Function):
        @staticmethod
        def forward(ctx, s_prev, s_next, inv_s, t, values):
            s_prev, s_next, t, values = (x.contiguous() for x in (s_prev, s_next, t, values))
            R, S = s_prev.shape
            C = values.shape[-1]
            f32 = dict(device=s_prev.device, dtype=torch.float32)
            w = torch.empty(R, S, **f32)
            depth = torch.empty(R, **f32)
            vals = torch.empty(R, C, **f32)
            opacity = torch.empty(R, **f32)
            bs, bc = _blocks(S, C)
            inv = inv_s.detach().reshape(1).float().contiguous()
            _fused_fwd_kernel[(R,)](s_prev, s_next, t, values, inv, w, depth, vals, opacity, S, C,
                                    ALPHA_E=ALPHA_EPS, TRANS_E=TRANSMITTANCE_EPS, BLOCK_S=bs, BLOCK_C=bc)
            ctx.save_for_backward(s_prev, s_next, inv_s, t, values)
            dt = s_prev.dtype
            return w.to(dt), depth.to(dt), vals.to(dt), opacity.to(dt)

        @staticmethod
        def backward(ctx, g_w, g_depth, g_vals, g_opacity):
            s_prev, s_next, inv_s, t, values = ctx.saved_tensors
            R, S = s_prev.shape
            C = values.shape[-1]
            f32 = dict(device=s_prev.device, dtype=torch.float32)
            g_w = torch.zeros(R, S, **f32) if g_w is None else g_w.float().contiguous()
            g_depth = torch.zeros(R, **f32) if g_depth is None else g_depth.float().contiguous()
            g_vals = torch.zeros(R, C, **f32) if g_vals is None else g_vals.float().contiguous()
            g_opacity = torch.zeros(R, **f32) if g_opacity is None else g_opacity.float().contiguous()
            d_sp = torch.empty(R, S, **f32)
            d_sn = torch.empty(R, S, **f32)
            d_t = torch.empty(R, S, **f32)
            d_v = torch.empty(R, S, C, **f32)
            d_inv = torch.empty(R, **f32)
            bs, bc = _blocks(S, C)
            inv = inv_s.detach().reshape(1).float().contiguous()
            _fused_bwd_kernel[(R,)](s_prev, s_next, t, values, inv, g_w, g_depth, g_vals, g_opacity,
                                    d_sp, d_sn, d_t, d_v, d_inv, S, C,
                                    ALPHA_E=ALPHA_EPS, TRANS_E=TRANSMITTANCE_EPS, BLOCK_S=bs, BLOCK_C=bc)
            dt = s_prev.dtype
            return (d_sp.to(dt), d_sn.to(dt), d_inv.sum().reshape(inv_s.shape).to(inv_s.dtype), d_t.to(dt),
                    d_v.to(values.dtype))


def triton_available(device: torch.device | str | None = None) -> bool:
    """True when the Triton kernels can run on ``device`` (CUDA + Triton importable)."""
    if not HAS_TRITON or not torch.cuda.is_available():
        return False
    return device is None or torch.device(device).type == "cuda"


def fused_neus_composite(s_prev: torch.Tensor, s_next: torch.Tensor, inv_s: torch.Tensor, t: torch.Tensor,
                         values: torch.Tensor, backend: str = "auto"):
    """Fused alpha + compositing. ``s_prev``, ``s_next``, ``t`` (R, S); ``inv_s`` () tensor; ``values`` (R, S, C).

    Returns ``(weights (R, S), depth_t (R,), values_out (R, C), opacity (R,))``, equal to
    ``composite(neus_alpha(s_prev, s_next, inv_s), t, values)``. ``backend``: ``"auto"`` (Triton for
    float32/16 CUDA tensors when available, else torch), ``"torch"`` or ``"triton"`` (computes in float32).
    """
    if not torch.is_tensor(inv_s):
        inv_s = s_prev.new_tensor(float(inv_s))
    if s_prev.ndim != 2 or values.ndim != 3 or values.shape[:2] != s_prev.shape:
        raise ValueError(f"fused_neus_composite expects s (R, S) and values (R, S, C), got "
                         f"{tuple(s_prev.shape)} and {tuple(values.shape)}")
    use_triton = backend == "triton" or (backend == "auto" and s_prev.is_cuda and s_prev.dtype != torch.float64
                                         and triton_available(s_prev.device))
    if use_triton:
        if not (HAS_TRITON and s_prev.is_cuda):
            raise RuntimeError("the Triton backend needs CUDA tensors and an importable triton")
        if s_prev.dtype == torch.float64:
            raise ValueError("the Triton kernel computes in float32; use backend='torch' for float64")
        return _FusedCompositeTriton.apply(s_prev, s_next, inv_s, t, values)
    if backend not in ("auto", "torch"):
        raise ValueError(f"unknown fused backend {backend!r} (auto | torch | triton)")
    return _FusedCompositeTorch.apply(s_prev, s_next, inv_s, t, values)
