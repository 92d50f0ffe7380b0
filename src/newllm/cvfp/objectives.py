"""The Phase 1 loss and its diversity objectives, one function per name of ``phase1.diversity``.

Phase 1 minimises ``phase1_loss``: ``(1 - w) * mean_t L_cvfp(t) + w * D(C)`` per optimizer
batch, where ``L_cvfp(t) = mean_i (c_t - sg(c_prev_t))_i^2`` is the fixed-point term, ``C``
(b x d_c) holds the batch's contexts and ``w = phase1.dist_reg_weight``. Every objective here
is ``D(C, mu, cfg) -> scalar`` on the *whole* batch (whatever ``chunk_tokens`` is); a per-token
term is the mean over the batch's rows. The trainer takes ``dD/dC`` once per batch
(``value_and_grad``) and pushes it through the chunks' forward graphs; the per-token reference
of the tests calls the same functions. The names, formulas and flags are the registry
``newllm.diversity``: adding an objective is one function here and one entry there.
Formulas, costs and measurements: docs/objectives.md.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.nn import functional as F

from newllm.config import Phase1Config
from newllm.diversity import DIVERSITY

Objective = Callable[[torch.Tensor, torch.Tensor, Phase1Config], torch.Tensor]


def ema_distance(c: torch.Tensor, mu: torch.Tensor, cfg: Phase1Config) -> torch.Tensor:
    """The original guide's term: mean over tokens of ``-||c_t - mu||``, ``mu`` the context EMA.
    On the LayerNorm sphere it is lowest for a two-point (rank-one) arrangement."""
    return -(c - mu).norm(dim=1).mean()


def centroid_dispersion(c: torch.Tensor, mu: torch.Tensor, cfg: Phase1Config) -> torch.Tensor:
    """MCDL: ``-||C - mean(C)||_F / b``, the batch's spread around its own centroid."""
    return -(c - c.mean(0)).norm() / c.shape[0]


def origin_anchored(c: torch.Tensor, mu: torch.Tensor, cfg: Phase1Config) -> torch.Tensor:
    """OACD: MCDL plus ``centroid_weight * ||mean(C)||^2``, which keeps the centroid at the origin."""
    return centroid_dispersion(c, mu, cfg) + cfg.centroid_weight * c.mean(0).pow(2).sum()


def vicreg(c: torch.Tensor, mu: torch.Tensor, cfg: Phase1Config) -> torch.Tensor:
    """VICReg's variance and covariance terms: ``mean_j relu(gamma - std_j)`` plus
    ``vicreg_cov_weight * sum_{i != j} cov_ij^2 / d`` over the batch's dimensions."""
    b, d = c.shape
    if b < 2:  # no spread to measure (a pass's last batch can hold one token)
        return c.sum() * 0.0
    centred = c - c.mean(0)
    std = torch.sqrt(centred.pow(2).sum(0) / (b - 1) + 1e-4)
    variance = F.relu(cfg.vicreg_variance_target - std).mean()
    cov = centred.T @ centred / (b - 1)
    off_diagonal = cov.pow(2).sum() - cov.diagonal().pow(2).sum()
    return variance + cfg.vicreg_cov_weight * off_diagonal / d


class _Uniformity(torch.autograd.Function):
    """``log mean exp(s * (z_i.z_j - 1))`` with ``z = c / ||c||`` over a set of pairs i != j:
    every pair (``step`` 1, ``groups`` 1); row i against the anchors, every ``step``-th row; or
    every pair within ``groups`` interleaved groups (row i in group ``i mod groups``).
    Hand-written backward (tests check it against autograd): where the pairs are symmetric
    (all pairs, groups) the gradient is ``2 s P z`` (P the pairs' softmax), one matmul instead
    of autograd's two; the normalisation's backward is folded in. The matmuls take autocast's
    dtype when it is on (a bf16 run's), like the rest of the training step; scores, exp and
    sums stay fp32."""

    @staticmethod
    def forward(ctx, c: torch.Tensor, step: int, groups: int, s: float) -> torch.Tensor:
        b, d, dev = c.shape[0], c.shape[1], c.device.type
        mm_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else c.dtype
        with torch.autocast(dev, enabled=False):
            norm = torch.linalg.vector_norm(c, dim=1, keepdim=True).clamp_min_(1e-12)
            z = c / norm
            zm = z.to(mm_dtype)
            if groups > 1:
                # pad to groups x m rows; row r * groups + g is member r of group g
                m = -(-b // groups)
                zg = F.pad(zm, (0, 0, 0, groups * m - b)).view(m, groups, d).transpose(0, 1).contiguous()
                e = torch.bmm(zg, zg.transpose(1, 2)).to(c.dtype).mul_(s)  # groups x m x m scores
                valid = (torch.arange(groups * m, device=c.device) < b).view(m, groups).T
                keep = valid[:, :, None] & valid[:, None, :]
                keep &= ~torch.eye(m, dtype=torch.bool, device=c.device)
                e.masked_fill_(~keep, float("-inf"))
                sizes = valid.sum(1)
                pairs = int((sizes * (sizes - 1)).sum())
                zm = zg
            else:
                za = zm[::step]
                k = za.shape[0]
                e = torch.mm(zm, za.T).to(c.dtype).mul_(s)  # b x k scores
                e.view(-1)[:: step * k + 1].fill_(float("-inf"))  # anchor j is row j * step: not its own pair
                pairs = b * k - k
            mx = e.max()  # <= s; the shift keeps exp finite for any temperature
            e.sub_(mx).exp_()
            total = e.sum()
        ctx.save_for_backward(z, zm, norm, e, total)
        ctx.step, ctx.groups, ctx.s = step, groups, s
        return mx - s + total.log() - math.log(pairs)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        z, zm, norm, e, total = ctx.saved_tensors
        step, groups = ctx.step, ctx.groups
        b, d = z.shape
        with torch.autocast(z.device.type, enabled=False):
            em = e.to(zm.dtype)
            if groups > 1:  # zm holds the padded groups (groups x m x d)
                gz = torch.bmm(em, zm).transpose(0, 1).reshape(-1, d)[:b].to(z.dtype).mul_(2.0)
            elif step == 1:
                gz = torch.mm(em, zm).to(z.dtype).mul_(2.0)
            else:  # rows against anchors, plus each anchor against the rows
                gz = torch.mm(em, zm[::step]).to(z.dtype)
                gz[::step] += torch.mm(em.T, zm).to(z.dtype)
            gz.mul_(grad_out * ctx.s / total)
            # through z = c / |c|: (gz - z (z . gz)) / |c|
            gz.sub_(z * (z * gz).sum(1, keepdim=True)).div_(norm)
        return gz, None, None, None


def uniformity(c: torch.Tensor, mu: torch.Tensor, cfg: Phase1Config) -> torch.Tensor:
    """Wang & Isola's uniformity: ``log mean_{i != j} exp(-t ||z_i - z_j||^2)`` with ``z = c/||c||``
    (lowest when the directions spread evenly over the sphere). For unit vectors
    ``-t ||z_i - z_j||^2 = 2t (z_i.z_j - 1)``: a matmul and a log-sum-exp. Every pair costs
    O(b^2 d) per batch; two cheaper pair sets, O(b K d), for a batch of b > K contexts (in
    schedule order):
    ``uniformity_group_size`` K: every pair within ceil(b/K) interleaved groups (context i in
    group i mod ceil(b/K)), so every context has the same number of partners;
    ``uniformity_anchors`` K: j runs over K anchors, every ceil(b/K)-th context, which then get
    most of the push (docs/results.md). Both 0, the default: every pair."""
    b = c.shape[0]
    if b < 2:  # no pairs (a pass's last batch can hold one token)
        return c.sum() * 0.0
    k, g = cfg.uniformity_anchors, cfg.uniformity_group_size
    step = 1 if k == 0 or b <= k else -(-b // k)
    groups = 1 if g == 0 or b <= g else -(-b // g)
    return _Uniformity.apply(c, step, groups, 2.0 * cfg.uniformity_temperature)


def _singular_values(c: torch.Tensor) -> torch.Tensor:
    """Singular values of ``c`` from the eigenvalues of its smaller Gram matrix, in float64
    (floored, so that the square root keeps a finite gradient at zero)."""
    c64 = c.double()
    gram = c64.T @ c64 if c.shape[0] >= c.shape[1] else c64 @ c64.T
    ev = torch.linalg.eigvalsh(gram)
    floor = ev.detach().max().clamp_min(1e-30) * 1e-12
    return ev.clamp_min(floor).sqrt()


def spectral_entropy(c: torch.Tensor, mu: torch.Tensor, cfg: Phase1Config) -> torch.Tensor:
    """``-log ER(C)``: minus the entropy of ``p = s / sum(s)`` over the batch's singular values, the
    batch's version of the effective rank validate_rank reports (not mean-centred)."""
    s = _singular_values(c)
    p = s / s.sum()
    return ((p * p.log()).sum()).to(c.dtype)


def nuclear(c: torch.Tensor, mu: torch.Tensor, cfg: Phase1Config) -> torch.Tensor:
    """``-||C||_* / (||C||_F sqrt(min(b, d)))``: the nuclear norm made scale-free (it lies in
    [-1, -1/sqrt(min(b, d))]), so that growing the context norm cannot lower it."""
    s = _singular_values(c)
    return (-s.sum() / (s.pow(2).sum().sqrt() * min(c.shape) ** 0.5)).to(c.dtype)


def none(c: torch.Tensor, mu: torch.Tensor, cfg: Phase1Config) -> torch.Tensor:
    """No diversity term: Phase 1 is the fixed-point loss alone (scaled by ``1 - w``)."""
    return c.sum() * 0.0


# the function of each registry entry: the one of the same name above
OBJECTIVES: dict[str, Objective] = {name: globals()[name] for name in DIVERSITY}


def fixed_point_term(c: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """``L_cvfp`` of each token: ``mean_i (c_t - c_prev_t)_i^2`` (``prev`` carries no gradient)."""
    return ((c - prev) ** 2).mean(1)


def phase1_loss(cvfp_sum, div, w: float, b: int):
    """The Phase 1 loss of a batch of ``b`` tokens: ``(1 - w) * cvfp_sum / b + w * div``, with
    ``cvfp_sum`` the summed ``fixed_point_term`` of the batch's tokens and ``div`` its ``D(C)``.
    The trainer calls it per chunk with ``div = sum(c * dD/dC)`` (the same gradient: ``dD/dC`` is
    the whole batch's), the reference once per batch with ``D(C)`` itself, the pass records
    with the pass's means (``b = 1``)."""
    return (1 - w) * cvfp_sum / b + w * div


def value_and_grad(name: str, c: torch.Tensor, mu: torch.Tensor, cfg: Phase1Config,
                   need_grad: bool = True, matmul_dtype: torch.dtype | None = None) -> tuple[float, torch.Tensor | None]:
    """``D(C)`` and ``dD/dC`` for the batch contexts ``c`` (b x d, any dtype), taken in fp32 at
    least. ``matmul_dtype`` (a bf16/fp16 run's autocast dtype) lets ``uniformity``'s
    matmuls run in it, as the step's other matmuls do; every other objective and every
    reduction stays fp32. The gradient is None when ``need_grad`` is false or D is constant."""
    fn = OBJECTIVES[name]
    low = matmul_dtype is not None and matmul_dtype != torch.float32 and DIVERSITY[name].low_precision
    with torch.autocast(c.device.type, dtype=matmul_dtype if low else None, enabled=low), torch.enable_grad():
        leaf = c.detach().to(torch.promote_types(c.dtype, torch.float32)).requires_grad_(need_grad)
        value = fn(leaf, mu.to(leaf.dtype), cfg)
        if not need_grad or name == "none":
            return float(value.detach()), None
        (grad,) = torch.autograd.grad(value, leaf)
    return float(value.detach()), grad
