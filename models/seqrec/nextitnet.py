"""NextItNet: A Simple Convolutional Generative Network for Next Item Recommendation.

Yuan, Karatzoglou, Arapakis, Jose, He. WSDM 2019. https://arxiv.org/abs/1808.05163

Stacked residual blocks of dilated causal 1D convolutions (dilations d and 2d per block) over
the item sequence; the state at every position predicts the next item (full-softmax CE against
the shared item table).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from models.seqrec.base import SequentialRecommender, padding_mask


@dataclass(frozen=True)
class NextItNetConfig:
    """NextItNet hyperparameters."""

    n_items: int  # vocab size incl. padding (0) and cold (1)
    dim: int = 64
    max_len: int = 50
    kernel_size: int = 3
    dilations: tuple[int, ...] = (1, 2, 4, 8)  # one residual block per entry


class CausalConv1d(nn.Module):
    """1D convolution that only looks left: pad (k - 1) * dilation zeros before the sequence."""

    def __init__(self, dim: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.left = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(dim, dim, kernel_size, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, d) -> (B, L, d)."""
        x = F.pad(x.transpose(1, 2), (self.left, 0))  # (B, d, left + L)
        return self.conv(x).transpose(1, 2)  # (B, L, d)


class ResidualBlock(nn.Module):
    """x + relu(ln(conv_2d(relu(ln(conv_d(x))))))."""

    def __init__(self, dim: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = CausalConv1d(dim, kernel_size, dilation)
        self.ln1 = nn.LayerNorm(dim)
        self.conv2 = CausalConv1d(dim, kernel_size, 2 * dilation)
        self.ln2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, d) -> (B, L, d)."""
        h = F.relu(self.ln1(self.conv1(x)))  # (B, L, d)
        h = F.relu(self.ln2(self.conv2(h)))  # (B, L, d)
        return x + h  # (B, L, d)


class NextItNet(SequentialRecommender):
    """Dilated causal CNN; padding states are zeroed after every block so they carry no signal."""

    config_class = NextItNetConfig

    def __init__(self, config: NextItNetConfig) -> None:
        super().__init__(config)
        self.blocks = nn.ModuleList(
            ResidualBlock(config.dim, config.kernel_size, d) for d in config.dilations
        )
        self.reset_parameters()

    def encode(self, seqs: Tensor) -> Tensor:
        """Causal states at every position."""
        real = padding_mask(seqs)[..., None]  # (B, L, 1)
        h = self.item_embedding(seqs)  # (B, L, d)
        for block in self.blocks:
            h = block(h) * real  # (B, L, d)
        return h  # (B, L, d)
