"""Exercise 4: a CBAM block, channel then spatial attention (Sec. III-B, Fig. 3). See exercises/README.md.

Write channel_gate, spatial_gate and forward, checked against deepfeat.CBAM with the same weights.
Work in your own copy:
    python exercises/check.py --start 4    # once: copies this stub to exercises/mywork/ex04_cbam.py
    python exercises/check.py 4            # checks exercises/mywork/ex04_cbam.py
A solution is in exercises/solutions/ex04_cbam.py: try first. Hints come after a failed check.
"""
import torch
import torch.nn as nn


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018) as in each conv attention block of Fig. 3.

    The layers are given (same names and sizes as deepfeat.CBAM, so its weights load into this one):
    `mlp` is the MLP shared by both channel descriptors, `spatial` the 7 x 7 conv of the spatial gate.
    Inputs x are float32 (N, C, H, W).
    """

    def __init__(self, channels, reduction=4, spatial_kernel=7):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)

    def channel_gate(self, x):
        """x (N, C, H, W) -> (N, C, 1, 1) = sigmoid(mlp(avg-pooled x) + mlp(max-pooled x)), pooled over H, W."""
        raise NotImplementedError("CBAM.channel_gate (Sec. III-B)")

    def spatial_gate(self, x):
        """x (N, C, H, W) -> (N, 1, H, W) = sigmoid(spatial([mean over C, max over C])), mean map first."""
        raise NotImplementedError("CBAM.spatial_gate (Sec. III-B)")

    def forward(self, x):
        """x (N, C, H, W) -> (N, C, H, W): x times the channel gate of x, then times the spatial gate of that."""
        raise NotImplementedError("CBAM.forward (Sec. III-B)")
