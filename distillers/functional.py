"""Loss arithmetic shared by the distillers: plain functions of tensors, no parameters.

Features are those of `model(x, is_feat=True, preact=False)`: 4-d maps (B, C, H, W) and a
final pooled vector (B, D). Teacher tensors arrive without gradient; where a loss treats the
teacher side specially (the distance normalisation) it says so.
"""
import torch
import torch.nn.functional as F


def task_loss(logits, target, smoothing=0.0):
    """The task's cross-entropy, picked as timm's train.py picks it: soft targets (Mixup or CutMix,
    the smoothing already in them) take timm's SoftTargetCrossEntropy, sum(-y log softmax(z)) over
    the classes; hard labels with `smoothing` its LabelSmoothingCrossEntropy, (1 - e) NLL + e mean
    over the classes of -log softmax(z); else F.cross_entropy. Each averaged over the batch."""
    if target.is_floating_point():
        from timm.loss import SoftTargetCrossEntropy
        return SoftTargetCrossEntropy()(logits, target)
    if smoothing:
        from timm.loss import LabelSmoothingCrossEntropy
        return LabelSmoothingCrossEntropy(smoothing)(logits, target)
    return F.cross_entropy(logits, target)


def hinton_kd(logits_s, logits_t, T):
    """Hinton et al., "Distilling the Knowledge in a Neural Network" (2015).

    KL(softmax(t / T) || softmax(s / T)), summed over classes, averaged over the batch, times T^2.
    The teacher's side is taken in log space, so a teacher probability of exactly 0 (DKD's masked
    class) gives a gradient of 0, not NaN, to a temperature that requires one (CTKD).
    """
    log_p_s = F.log_softmax(logits_s / T, dim=1)
    log_p_t = F.log_softmax(logits_t / T, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="sum", log_target=True) * T ** 2 / logits_s.shape[0]


def log_binary(logits, cls, T):
    """(B, 2): log p[cls] and the log of the other classes' total, p = softmax(logits / T); in
    log space (DKD's and RLD's sum-then-log of probabilities, without its underflow)."""
    log_p = F.log_softmax(logits / T, dim=1)
    chosen = torch.arange(logits.shape[1], device=logits.device) == cls.unsqueeze(1)
    return torch.cat([log_p.gather(1, cls.unsqueeze(1)),
                      log_p.masked_fill(chosen, float("-inf")).logsumexp(dim=1, keepdim=True)], dim=1)


def standardize(logits):
    """Logit standardisation (Sun et al., "Logit Standardization in Knowledge Distillation",
    CVPR 2024): each sample's logits z-scored over the classes, (z - mean) / (1e-7 + std), the std
    unbiased and the 1e-7 added to it, as the authors' `normalize`."""
    return (logits - logits.mean(dim=1, keepdim=True)) / (1e-7 + logits.std(dim=1, keepdim=True))


# -- normalised pairwise distances (RKD across samples, ASKD within a sample) ------------------

def normalized_distances(x, dim):
    """Pairwise Euclidean distances between the points indexed by `dim`, over the mean distance.

    The dimensions before `dim` are batch dimensions, those after it (flattened, possibly none)
    are the coordinates of a point: x of shape (*batch, M, *coords) gives (*batch, M, M) with
    d[..., i, j] = sqrt(max(||x_i - x_j||^2, 1e-12)), the diagonal set to 0, all divided by the
    mean of the positive entries of the whole result (RKD's and ASKD's normalisation).
    RKD: x (B, D), dim 0. ASKD class structure: logits (B, K), dim 1 (scalar points).
    """
    dim = dim % x.dim()
    points = x.reshape(*x.shape[:dim + 1], -1)                       # (*batch, M, D)
    diff = points.unsqueeze(-2) - points.unsqueeze(-3)               # (*batch, M, M, D)
    d = diff.pow(2).sum(-1).clamp(min=1e-12).sqrt()
    eye = torch.eye(d.shape[-1], dtype=torch.bool, device=d.device)
    d = d.masked_fill(eye, 0.0)
    # mean over the positive entries; d >= 0, so their sum is the sum of all (no host sync)
    return d / (d.sum() / (d > 0).sum())


def distance_structure_loss(x_s, x_t, dim):
    """Smooth L1 (beta 1, mean over all entries) between the student's and the teacher's
    `normalized_distances`; the teacher's are computed without gradient, the student's
    normalising mean keeps its gradient (as RKD's distance term and both ASKD losses)."""
    with torch.no_grad():
        target = normalized_distances(x_t, dim)
    return F.smooth_l1_loss(normalized_distances(x_s, dim), target)


def rkd_angle(f_s, f_t):
    """RKD angle term: smooth L1 between the cosines <e_ij, e_ik> of the normalised difference
    vectors e_ij = normalize(x_j - x_i) of every triplet (teacher side without gradient)."""
    def angles(x):
        x = x.flatten(1)
        e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)  # e[i, j] = x_j - x_i
        return torch.bmm(e, e.transpose(1, 2))
    with torch.no_grad():
        target = angles(f_t)
    return F.smooth_l1_loss(angles(f_s), target)


# -- feature-map methods -----------------------------------------------------------------------

def pool_to_smaller(a, b):
    """Adaptive-average-pool the spatially larger of two maps to the other's (square) size."""
    if a.shape[2] > b.shape[2]:
        a = F.adaptive_avg_pool2d(a, (b.shape[2], b.shape[2]))
    elif a.shape[2] < b.shape[2]:
        b = F.adaptive_avg_pool2d(b, (a.shape[2], a.shape[2]))
    return a, b


def attention_map(f, p=2):
    """Zagoruyko & Komodakis, "Paying More Attention to Attention" (2017):
    Q = normalize(mean_c f_c^p), flattened per sample, L2-normalised."""
    return F.normalize(f.pow(p).mean(1).flatten(1))


def attention_loss(f_s, f_t, p=2):
    """Mean squared difference of the attention maps, the larger feature map pooled first."""
    f_s, f_t = pool_to_smaller(f_s, f_t)
    return (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()


def similarity_loss(f_s, f_t):
    """Tung & Mori, "Similarity-Preserving Knowledge Distillation" (2019):
    G = F F^T over the batch (F flattened per sample), rows L2-normalised;
    ||G_t - G_s||_F^2 / B^2."""
    def gram(f):
        f = f.flatten(1)
        return F.normalize(f @ f.t())
    bsz = f_s.shape[0]
    return (gram(f_t) - gram(f_s)).pow(2).sum() / (bsz * bsz)


def correlation_loss(e_s, e_t):
    """Peng et al., "Correlation Congruence for Knowledge Distillation" (2019), as in CRD's code:
    d = |e_s - e_t|, loss = mean over i of sum_k d[i, k] * d[i + 1, k]."""
    delta = (e_s - e_t).abs()
    return (delta[:-1] * delta[1:]).sum(1).mean()


def fsp_matrices(feats):
    """Yim et al., "A Gift from Knowledge Distillation" (2017): for consecutive maps (bottom,
    top), the larger pooled to the smaller, G[c2, c1] = mean over positions of top[c2] * bot[c1]."""
    out = []
    for bot, top in zip(feats[:-1], feats[1:]):
        bot, top = pool_to_smaller(bot, top)
        out.append(torch.einsum("bihw,bjhw->bji", bot, top) / (bot.shape[2] * bot.shape[3]))
    return out


def fsp_loss(feats_s, feats_t):
    """Sum over consecutive pairs of the mean squared difference of the FSP matrices."""
    return sum((g_s - g_t).pow(2).mean()
               for g_s, g_t in zip(fsp_matrices(feats_s), fsp_matrices(feats_t)))


# -- ASKD --------------------------------------------------------------------------------------

def region_structure_loss(f_s, f_t, r):
    """ASKD region structure: both square maps average-pooled (kernel = stride = H // r',
    r' = min(r, H_s, H_t)) into r'^2 regions per channel; then, per sample and channel, the
    normalised distances between regions compared as in `distance_structure_loss`."""
    r = min(r, f_s.shape[2], f_t.shape[2])
    regions_s = F.avg_pool2d(f_s, f_s.shape[2] // r).flatten(2)      # (B, C, r*r)
    regions_t = F.avg_pool2d(f_t, f_t.shape[2] // r).flatten(2)
    return distance_structure_loss(regions_s, regions_t, dim=2)


# -- CRD ---------------------------------------------------------------------------------------

def nce_loss(scores, n_data, eps=1e-7):
    """CRD's NCE loss (Tian et al., "Contrastive Representation Distillation", 2020, eq. 18) on
    normalised scores (B, 1 + K), the positive in column 0, noise probability Pn = 1 / n_data:
    -(sum_b log(P_pos / (P_pos + K Pn + eps)) + sum_b,k log(K Pn / (P_neg + K Pn + eps))) / B."""
    m_pn = (scores.shape[1] - 1) / float(n_data)
    log_d1 = torch.log(scores[:, 0] / (scores[:, 0] + m_pn + eps))
    log_d0 = torch.log(m_pn / (scores[:, 1:] + m_pn + eps))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


# -- VID, PKT, NST, KDSVD ----------------------------------------------------------------------

def gaussian_nll(mean, target, log_scale, eps):
    """VID's negative log-likelihood of `target` under N(mean, var_c), without the constant:
    mean over all entries of 0.5 * ((mean - target)^2 / var_c + log var_c), one variance per
    channel (dim 1): var_c = softplus(log_scale_c) + eps."""
    var = (F.softplus(log_scale) + eps).view(1, -1, *[1] * (mean.dim() - 2))
    return (0.5 * ((mean - target).pow(2) / var + var.log())).mean()


def probability_transfer_loss(f_s, f_t, eps=1e-7):
    """PKT: each model's features (B, D) as conditional probabilities over the batch,
    p_ij = k_ij / sum_j k_ij with the cosine kernel k_ij = (cos(f_i, f_j) + 1) / 2 (features
    divided by norm + eps); L = mean over i, j of p^t_ij log((p^t_ij + eps) / (p^s_ij + eps))."""
    def conditional(f):
        f = f.flatten(1)
        f = f / (f.norm(dim=1, keepdim=True) + eps)
        kernel = (f @ f.t() + 1) / 2
        return kernel / kernel.sum(1, keepdim=True)
    p_s, p_t = conditional(f_s), conditional(f_t)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


def selectivity_mmd(f_s, f_t):
    """NST: the larger map pooled to the other's size; each channel's map flattened and
    L2-normalised over positions; squared MMD between the student's and the teacher's channels
    with the kernel k(a, b) = (a . b)^2, each kernel term averaged over samples and channel
    pairs: mean k(t, t') + mean k(s, s') - 2 mean k(s, t) (the first without gradient)."""
    f_s, f_t = pool_to_smaller(f_s, f_t)
    s, t = F.normalize(f_s.flatten(2), dim=2), F.normalize(f_t.flatten(2), dim=2)

    def kernel_mean(a, b):
        return (a @ b.transpose(1, 2)).pow(2).mean()
    with torch.no_grad():
        teacher_term = kernel_mean(t, t)
    return teacher_term + kernel_mean(s, s) - 2 * kernel_mean(s, t)


def _finite(x):
    """Non-finite entries set to 0 (KDSVD's guard against a failed SVD)."""
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def leading_right_singular(f, n):
    """Per sample, the map (C, H, W) as the (H*W) x C matrix of positions by channels: its n
    largest singular values (L2-normalised as one vector) and right singular vectors (C, n)
    (columns L2-normalised), both with non-finite entries zeroed. Low-precision maps are
    decomposed in float32 (no SVD for half precision)."""
    f = f.to(torch.promote_types(f.dtype, torch.float32))
    _, s, vh = torch.linalg.svd(f.flatten(2).transpose(1, 2), full_matrices=False)
    return (F.normalize(_finite(s)[:, :n], dim=1),
            F.normalize(_finite(vh.transpose(1, 2))[:, :, :n], dim=1))


def kdsvd_loss(maps_s, maps_t, k):
    """KDSVD over consecutive pairs of maps (the student's and teacher's maps of equal channels):
    at each map, the teacher's k leading right singular vectors V_t and the student's k + 3;
    for each teacher vector the student vector of largest |cosine| with it, its sign matched
    (V_s); both scaled by the teacher's normalised singular values. Between map l and l - 1,
    G[c, c', j] = exp(-(V[c, j] - V_prev[c', j])^2 / 8); L = sum over l of
    sum((G_s - G_t)^2) / B, non-finite entries zeroed (teacher side without gradient)."""
    loss, previous = 0.0, None
    for f_s, f_t in zip(maps_s, maps_t):
        with torch.no_grad():
            scale_t, v_t = leading_right_singular(f_t, k)
        v_s = leading_right_singular(f_s, k + 3)[1]
        cosine = (v_s.transpose(1, 2) @ v_t).detach()                       # (B, k + 3, k)
        best = cosine.abs() == cosine.abs().amax(1, keepdim=True)
        v_s = v_s @ torch.where(best, cosine.sign(), torch.zeros_like(cosine))
        v_s, v_t = v_s * scale_t.unsqueeze(1), v_t * scale_t.unsqueeze(1)
        if previous is not None:
            def rbf(v, v_prev):
                return torch.exp(-(v.unsqueeze(2) - v_prev.unsqueeze(1)).pow(2) / 8)
            loss = loss + _finite((rbf(v_s, previous[0]) - rbf(v_t, previous[1])).pow(2)).sum()
        previous = v_s, v_t
    return loss / maps_s[0].shape[0]


# -- relations between probability vectors (DIST) --------------------------------------------

def softmax_pearson_distance(a, b, eps=1e-8):
    """1 - the mean over rows of the Pearson correlation between the rows of a and b (B, K):
    the centred rows' cosine, eps added to the product of their norms (DIST's)."""
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    return 1 - ((a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)).mean()
