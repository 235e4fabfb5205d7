"""The paper's printed numbers (arXiv 2602.21596), copied exactly, to be shown beside ours.

These are reference data, never results: every number of ours in the book is computed by a notebook cell.
"""

from __future__ import annotations

import math

# Table 1: c = y + t at t₀. ImageNet-1K (DiT … REPA), DeepFashion (X-MDPT), VGGSound (MDSGen).
TABLE1 = {
    "DiT": {"D": 1152, "PR": 120.69, "nPR": 0.1047, "cosine": 0.9001},
    "SiT": {"D": 1152, "PR": 26.25, "nPR": 0.0228, "cosine": 0.9852},
    "MDT": {"D": 1152, "PR": 18.45, "nPR": 0.0160, "cosine": 0.9905},
    "LightningDiT": {"D": 1152, "PR": 23.70, "nPR": 0.0205, "cosine": 0.9779},
    "MG": {"D": 1152, "PR": 19.98, "nPR": 0.0173, "cosine": 0.9934},
    "REPA": {"D": 1152, "PR": 17.67, "nPR": 0.0153, "cosine": 0.9946},
    "X-MDPT": {"D": 1024, "PR": 495.75, "nPR": 0.4842, "cosine": 0.9998},
    "MDSGen": {"D": 768, "PR": 104.22, "nPR": 0.1357, "cosine": 0.9999},
}

# Table 4: y alone vs y + t (nPR as fractions; REPA's nPR(y+t) is printed as 1.43% here, 1.53% in Table 1).
TABLE4 = {
    "DiT": {"cosine_yt": 0.9001, "nPR_yt": 0.1047, "cosine_y": 0.7774, "nPR_y": 0.7014},
    "SiT": {"cosine_yt": 0.9852, "nPR_yt": 0.0228, "cosine_y": 0.5436, "nPR_y": 0.3743},
    "MDT": {"cosine_yt": 0.9905, "nPR_yt": 0.0160, "cosine_y": 0.8540, "nPR_y": 0.3675},
    "LightningDiT": {"cosine_yt": 0.9779, "nPR_yt": 0.0205, "cosine_y": 0.7166, "nPR_y": 0.3642},
    "MG": {"cosine_yt": 0.9934, "nPR_yt": 0.0173, "cosine_y": 0.6853, "nPR_y": 0.4367},
    "REPA": {"cosine_yt": 0.9946, "nPR_yt": 0.0143, "cosine_y": 0.5194, "nPR_y": 0.4160},
    "UViT (concat)": {"cosine_yt": 0.97917, "nPR_yt": 0.5006, "cosine_y": 0.00165, "nPR_y": 0.6352},
}

# Table 5: continuous / text conditions (cosine y+t, nPR y+t, cosine y, nPR y).
TABLE5 = {
    "X-MDPT-L": {"cosine_yt": 0.9998, "nPR_yt": 0.4842, "cosine_y": 0.9862, "nPR_y": 0.2068},
    "X-MDPT-B": {"cosine_yt": 0.99992, "nPR_yt": 0.3759, "cosine_y": 0.9909, "nPR_y": 0.2975},
    "X-MDPT-S": {"cosine_yt": 0.9995, "nPR_yt": 0.5341, "cosine_y": 0.9492, "nPR_y": 0.3751},
    "SD3 2B": {"cosine_yt": 0.9962, "nPR_yt": 0.5479, "cosine_y": 0.9949, "nPR_y": 0.5239},
    "SD3 8B": {"cosine_yt": 0.9995, "nPR_yt": 0.2667, "cosine_y": 0.9937, "nPR_y": 0.2425},
    "MDSGen": {"cosine_yt": 0.9999, "nPR_yt": 0.1357, "cosine_y": 0.9918, "nPR_y": 0.0998},
    "AudioLDM": {"cosine_yt": 0.9828, "nPR_yt": 0.0862, "cosine_y": 0.1406, "nPR_y": 0.6309},
}

# The columns of Tables 4 and 5 in stats.summary's key scheme (cosine and nPR of c = y + t and of y alone, at t₀).
TABLE_COLUMNS = {"cosine_yt": "cos_c", "nPR_yt": "npr_c", "cosine_y": "cos_y", "nPR_y": "npr_y"}

# Magnitude scales quoted in the text (head coordinates, tail coordinates).
MAGNITUDES = {"REPA/SiT head": (5.0, 8.0), "REPA/SiT tail": (1e-3, 1e-1), "DiT-XL/2 max |c_i|": 0.8}

# Fig. 12 (REPA-B/2, 200k steps): nPR of c falls from about 90% to below 6% during training.
TRAINING_NPR = {"start": 0.90, "end_below": 0.06}
# Fig. 12: the length of the REPA-B/2 training run it follows ("200k steps").
TRAINING_STEPS = 200_000

# §5 and Tables 2, 3, 6: FID-5K, i.e. FID on 5,000 samples, 5 per ImageNet class.
FID_SAMPLES = 5000
FID_SAMPLES_PER_CLASS = 5

# Table 7: X-MDPT on DeepFashion, baseline and its pruned row "40% pruned (τ=0.1)": the share of c removed and τ.
TABLE7_SHARE = 0.40
TABLE7_TAU = 0.1
TABLE7_PRUNED = f"{TABLE7_SHARE:.0%} pruned (τ={TABLE7_TAU:g})"  # Table 7's row label, "40% pruned (τ=0.1)"
# (FID, SSIM, LPIPS, PSNR)
TABLE7 = {
    "baseline": {"FID": 18.6372, "SSIM": 0.6798, "LPIPS": 0.1672, "PSNR": 17.336},
    TABLE7_PRUNED: {"FID": 18.6692, "SSIM": 0.6792, "LPIPS": 0.1675, "PSNR": 17.328},
}

# Table 2: REPA-XL pruning, FID-5K / IS / CLIP. "removed" is the printed count of 1152 dims; "removed_pct" the
# printed percentage (None where not printed), which is not exactly count / 1152 (probably a per-sample average).
# schedule: "every" = tᵢ, "first" = t₀, "last" = last-k (k never given).
TABLE2 = [
    {"setting": "baseline", "mask": None, "tau": None, "schedule": None, "removed": 0, "removed_pct": None,
     "FID": 7.1694, "IS": 176.02, "CLIP": 29.746},
    {"setting": "tail τ=0.01, tᵢ", "mask": "tail", "tau": 0.01, "schedule": "every", "removed": 448,
     "removed_pct": 38.94, "FID": 7.2143, "IS": 171.99, "CLIP": 29.737},
    {"setting": "tail τ=0.01, t₀", "mask": "tail", "tau": 0.01, "schedule": "first", "removed": 448,
     "removed_pct": None, "FID": 7.1690, "IS": 175.97, "CLIP": 29.807},
    {"setting": "tail τ=0.01, last-k", "mask": "tail", "tau": 0.01, "schedule": "last", "removed": 448,
     "removed_pct": None, "FID": 7.1598, "IS": 175.49, "CLIP": 29.805},
    {"setting": "tail τ=0.02, tᵢ", "mask": "tail", "tau": 0.02, "schedule": "every", "removed": 762,
     "removed_pct": 66.21, "FID": 9.2202, "IS": 125.15, "CLIP": 29.221},
    {"setting": "tail τ=0.05, tᵢ", "mask": "tail", "tau": 0.05, "schedule": "every", "removed": 1110,
     "removed_pct": 96.41, "FID": 56.2308, "IS": 20.47, "CLIP": 22.177},
    {"setting": "tail τ=5.0, tᵢ", "mask": "tail", "tau": 5.0, "schedule": "every", "removed": 1149,
     "removed_pct": 99.80, "FID": 356.135, "IS": 1.77, "CLIP": 21.922},
    {"setting": "head τ=5.0, tᵢ", "mask": "head", "tau": 5.0, "schedule": "every", "removed": 2,
     "removed_pct": 0.20, "FID": 7.8478, "IS": 164.15, "CLIP": 29.555},
    {"setting": "head τ=1.0, tᵢ", "mask": "head", "tau": 1.0, "schedule": "every", "removed": 8,
     "removed_pct": 0.69, "FID": 523.7637, "IS": 1.95, "CLIP": 22.690},
]

# The share of c that Table 2's headline row (tail τ = 0.01 on REPA-XL) removes: the share other models are matched by.
HEADLINE_SHARE = TABLE2[1]["removed_pct"] / 100

# Tables 3/6: other models at tail τ=0.01 (FID / IS / CLIP / Precision / Recall; None where not printed).
# REPA's row gives precision/recall only (its FID/IS/CLIP are Table 2's).
TABLE3 = {
    "MG": {
        "baseline": {"FID": 7.2478, "IS": 174.52, "CLIP": 30.199, "precision": 0.7842, "recall": 0.6633},
        "every": {"FID": 7.2791, "IS": 170.55, "CLIP": 30.140, "precision": None, "recall": None},
        "first": {"FID": 7.2466, "IS": 174.55, "CLIP": 30.199, "precision": 0.7854, "recall": 0.6625},
        "last": {"FID": 7.2455, "IS": 174.31, "CLIP": 30.198, "precision": 0.7898, "recall": 0.6644},
    },
    "LightningDiT": {
        "baseline": {"FID": 7.0802, "IS": 169.86, "CLIP": 30.720, "precision": 0.7928, "recall": 0.6248},
        "every": {"FID": 7.0130, "IS": 166.06, "CLIP": 30.7045, "precision": None, "recall": None},
        "first": {"FID": 7.0712, "IS": 169.92, "CLIP": 30.729, "precision": 0.7906, "recall": 0.6256},
        "last": {"FID": 7.0745, "IS": 169.92, "CLIP": 30.729, "precision": 0.7935, "recall": 0.6265},
    },
    "REPA": {
        "baseline": {"precision": 0.8032, "recall": 0.6236},
        "every": None,
        "first": {"precision": 0.7878, "recall": 0.6252},
        "last": {"precision": 0.8045, "recall": 0.6381},
    },
}

# ---------------------------------------------------------------------------------------------------
#   The bars of the book's verdicts (report.VERDICT_RULE). Each is either a number the paper prints, derived
#   from one above, or, marked "reading", the project's reading of a word the paper leaves without a number.
# ---------------------------------------------------------------------------------------------------
_IMAGENET = [v for v in TABLE1.values() if v["D"] == 1152]
_ADALN_TABLE4 = [v for name, v in TABLE4.items() if name != "UViT (concat)"]
_CONTINUOUS = [v for name, v in TABLE5.items() if name.startswith(("X-MDPT", "MDSGen"))]

BARS = {
    # Regime (preconditions): the paper's ImageNet models span these ranges at t₀ (Table 1).
    "aligned_cosine": min(v["cosine"] for v in _IMAGENET),  # DiT-XL/2, the least aligned model it studies
    "sparse_npr": max(v["nPR"] for v in _IMAGENET),  # DiT-XL/2, the least sparse model it studies
    "dense_npr": max(v["nPR_y"] for v in _ADALN_TABLE4),  # y alone on DiT: the densest vector it reports
    # Table 4: y alone is moderately aligned, and t adds at least the smallest gap it prints (DiT).
    "y_cosine_range": (min(v["cosine_y"] for v in _ADALN_TABLE4), max(v["cosine_y"] for v in _ADALN_TABLE4)),
    "t_gap": min(v["cosine_yt"] - v["cosine_y"] for v in _ADALN_TABLE4),
    # §4: "the similarity stays > 0.99 across nearly all timesteps"; reading: "nearly all" is 90% of them.
    "schedule_cosine": 0.99,
    "nearly_all": 0.9,  # reading
    # Table 5 (continuous conditions: X-MDPT, MDSGen, and SD3 2B, the lowest of its text models).
    "continuous_cosine": min(min(v["cosine_yt"] for v in _CONTINUOUS), TABLE5["SD3 2B"]["cosine_yt"]),
    "continuous_npr_range": (min(v["nPR_yt"] for v in _CONTINUOUS), max(v["nPR_yt"] for v in _CONTINUOUS)),
    "continuous_y_cosine": min(min(v["cosine_y"] for v in _CONTINUOUS), TABLE5["SD3 2B"]["cosine_y"]),
    # Fig. 11: "> 80% of the mean vector's coordinates lie below τ = 0.01".
    "tail_tau": 0.01,
    "tail_share_below_tau": 0.80,
    # §3: the head is "≈1–2% of 1152" dims; Fig. 9: "15–20 head dims" carry the variance, mean 2e-4 to 1.9e-3.
    "head_share": 0.02,
    "variance_dims": 20 / 1152,
    "mean_variance_range": (2e-4, 1.9e-3),
    # Reading of "the head holds the magnitude": the head share of dims holds at least half of ‖c̄‖².
    "head_energy": 0.5,
    # Reading of Fig. 13 "keeps the clusters": a probe on the head keeps 90% of the full vector's accuracy.
    "probe_kept": 0.9,
    # Reading of Fig. 13 "collapses": a probe on the tail keeps less than half of the full vector's margin over chance.
    "probe_lost": 0.5,
    # Fig. 11 transfers its absolute τ only to a model whose c has the paper's scale: max |c̄ᵢ| ≥ DiT-XL/2's.
    "scale_max_c": MAGNITUDES["DiT-XL/2 max |c_i|"],
    # Fig. 12: nPR falls from about 90% to below 6%.
    "training_npr_end": TRAINING_NPR["end_below"],
    # Table 2: "destroyed" is at least the FID ratio of the paper's own broken tail row (96.41% removed).
    "destroyed_ratio": TABLE2[5]["FID"] / TABLE2[0]["FID"],
    # The Ising organism's own quality bar (not the paper's): Spearman(T, sample energy) and binned |ΔE| per spin.
    "organism_spearman": 0.9,
    "organism_dE": 0.15,
    # Reading of "negligible": a saving below 1% of a whole forward pass.
    "negligible_forward_share": 0.01,
}

# The normalised participation ratio of a vector of independent Gaussian coordinates: E|x|² / E x² = 2/π.
GAUSSIAN_NPR = 2 / math.pi
