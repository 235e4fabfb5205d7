"""The paper's printed numbers (arXiv 2602.21596), copied exactly, to be shown beside ours.

These are reference data, never results: every number of ours in the book is computed by a notebook cell.
"""

from __future__ import annotations

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

# Magnitude scales quoted in the text (head coordinates, tail coordinates).
MAGNITUDES = {"REPA/SiT head": (5.0, 8.0), "REPA/SiT tail": (1e-3, 1e-1), "DiT-XL/2 max |c_i|": 0.8}

# Fig. 12 (REPA-B/2, 200k steps): nPR of c falls from about 90% to below 6% during training.
TRAINING_NPR = {"start": 0.90, "end_below": 0.06}
