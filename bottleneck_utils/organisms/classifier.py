"""A small MNIST classifier at the organism's 14×14 resolution: the quality check of ``mnist-dit`` samples
and, later, the domain feature net of the metrics (its 128-d penultimate layer)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bottleneck_utils import integrity
from bottleneck_utils.features import quantize
from bottleneck_utils.images import check_images

WEIGHTS = integrity.CHECKPOINT_DIR / "mnist-classifier" / "model.safetensors"
IMAGE_SHAPE = (1, 14, 14)  # (C, H, W): the organism's resolution, MNIST's 28×28 averaged over 2×2
NUM_CLASSES = 10


class MnistClassifier(nn.Module):
    """conv(32) → conv(64) → pool → fc(128) → fc(10), for (B, 1, 14, 14) images in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(images * 2 - 1))  # (B, 32, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 64, 7, 7)
        return F.relu(self.fc1(x.flatten(1)))  # (B, 128)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(images))  # (B, 10) logits


def downsample(images_uint8) -> torch.Tensor:
    """(N, 28, 28) uint8 MNIST → (N, 1, 14, 14) float in [0, 1], by 2×2 area averaging."""
    x = torch.as_tensor(images_uint8).float().div(255)[:, None]  # (N, 1, 28, 28)
    return F.avg_pool2d(x, 2)  # (N, 1, 14, 14)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 2, seed: int = 0) -> MnistClassifier:
    """Trains the classifier with Adam on (N, 1, 14, 14) images in [0, 1]; seeded and deterministic."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MnistClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in tqdm(range(0, len(images), 128), desc="classifier epoch"):
            batch = order[start : start + 128]
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def load_classifier(device: str | torch.device = "cpu") -> MnistClassifier:
    """The shipped classifier, sha256-checked against the manifest."""
    integrity.verified("mnist-classifier", WEIGHTS)
    model = MnistClassifier()
    fix = integrity.shipped_fix("mnist-classifier")
    integrity.load_weights(model, integrity.read_safetensors(WEIGHTS, fix), WEIGHTS, fix)
    return model.to(device).eval()


@torch.no_grad()
def predict(model: MnistClassifier, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Class probabilities (N, 10) of (N, 1, 14, 14) images in [0, 1]."""
    images = check_images(images)
    device = next(model.parameters()).device
    chunks = [model(images[i : i + batch_size].to(device)).softmax(-1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(chunks)


@torch.no_grad()
def classifier_outputs(model, images: torch.Tensor, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 128), class probabilities (N, 10)) of (N, 1, 14, 14) images in [0, 1], quantized first."""
    images = check_images(images)
    if tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"the MNIST classifier takes {IMAGE_SHAPE} images, got {tuple(images.shape[1:])}")
    device = next(model.parameters()).device
    features, probs = [], []
    for start in range(0, len(images), batch_size):
        batch = quantize(images[start : start + batch_size]).to(device)  # (B, 1, 14, 14)
        hidden = model.features(batch)  # (B, 128)
        features.append(hidden.double().cpu().numpy())
        probs.append(model.fc2(hidden).softmax(-1).double().cpu().numpy())
    if not features:  # no images: empty arrays of the right widths
        return np.empty((0, model.fc1.out_features)), np.empty((0, model.fc2.out_features))
    return np.concatenate(features), np.concatenate(probs)
