"""Exercise 4 (solution): a CBAM block, channel attention then spatial attention (Sec. III-B, Fig. 3).

Check it: python exercises/check.py 4 --solution
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
        avg = x.mean(dim=(2, 3), keepdim=True)                                   # (N, C, 1, 1)
        mx = x.amax(dim=(2, 3), keepdim=True)                                    # (N, C, 1, 1)
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx))

    def spatial_gate(self, x):
        """x (N, C, H, W) -> (N, 1, H, W) = sigmoid(spatial([mean over C, max over C])), mean map first."""
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (N, 2, H, W)
        return torch.sigmoid(self.spatial(maps))

    def forward(self, x):
        """x (N, C, H, W) -> (N, C, H, W): x times the channel gate of x, then times the spatial gate of that."""
        x = x * self.channel_gate(x)
        return x * self.spatial_gate(x)
