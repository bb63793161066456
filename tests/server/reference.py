"""The tier's models computed without torch: numpy in float64 from the weights alone.

Why: a test that compares the server's answer with the same torch module called directly
compares torch with torch (same kernels, same device, same mistakes); an output checked against
itself proves nothing. These functions are a second, independent implementation of
server_support's TinyMLP and TinyCNN, layer by layer.
"""

from __future__ import annotations

import numpy as np
import torch


def _weights(layer: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    return layer.weight.detach().cpu().double().numpy(), layer.bias.detach().cpu().double().numpy()


def mlp(model: torch.nn.Module, rows: np.ndarray) -> np.ndarray:
    """TinyMLP: Linear(4, 16) → ReLU → Linear(16, 3)."""
    (w1, b1), (w2, b2) = _weights(model.net[0]), _weights(model.net[2])
    hidden = np.maximum(rows.astype(np.float64) @ w1.T + b1, 0.0)
    return hidden @ w2.T + b2


def _conv3x3(images: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """3×3 convolution, stride 1, zero padding 1 (N, C, H, W) → (N, O, H, W)."""
    height, width = images.shape[2:]
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((images.shape[0], weight.shape[0], height, width))
    for dy in range(3):
        for dx in range(3):
            window = padded[:, :, dy : dy + height, dx : dx + width]
            out += np.einsum("nchw,oc->nohw", window, weight[:, :, dy, dx])
    return out + bias[None, :, None, None]


def _pool(images: np.ndarray, size: int, reduce: str) -> np.ndarray:
    """Non-overlapping ``size``×``size`` windows (what MaxPool2d(2) and, on 6×6 inputs,
    AdaptiveAvgPool2d(2) compute)."""
    n, c, h, w = images.shape
    blocks = images.reshape(n, c, h // size, size, w // size, size)
    return blocks.max(axis=(3, 5)) if reduce == "max" else blocks.mean(axis=(3, 5))


def cnn(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """TinyCNN on 1×12×12: conv 8 → ReLU → max-pool 2 → conv 16 → ReLU → average to 2×2 → Linear."""
    features = model.features
    x = np.maximum(_conv3x3(images.astype(np.float64), *_weights(features[0])), 0.0)
    x = _pool(x, 2, "max")  # 12×12 → 6×6
    x = np.maximum(_conv3x3(x, *_weights(features[3])), 0.0)
    x = _pool(x, 3, "mean")  # 6×6 → 2×2: adaptive pooling's windows are 3×3 here
    head_w, head_b = _weights(model.head)
    return x.reshape(x.shape[0], -1) @ head_w.T + head_b


def predict(model: torch.nn.Module, inputs: np.ndarray) -> np.ndarray:
    """The reference for either model, chosen by the input's rank."""
    return cnn(model, inputs) if inputs.ndim == 4 else mlp(model, inputs)
