"""Transformer encoder shared by SASRec, BERT4Rec and CORE-trm (pre-LayerNorm, nanoGPT-style)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SelfAttention(nn.Module):
    """Multi-head self-attention with a boolean mask (True = attend)."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, L, d), mask (B, 1, L, L) -> (B, L, d)."""
        B, L, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, L, d)
        q = q.view(B, L, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, L, d/H)
        k = k.view(B, L, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, L, d/H)
        v = v.view(B, L, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, L, d/H)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, L, d/H)
        y = y.transpose(1, 2).reshape(B, L, C)  # (B, L, d)
        return self.resid_dropout(self.proj(y))  # (B, L, d)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, n_heads: int, dropout: float, ffn_mult: int = 4) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, n_heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Linear(ffn_mult * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, L, d), mask (B, 1, L, L) -> (B, L, d)."""
        x = x + self.attn(self.ln1(x), mask)  # (B, L, d)
        return x + self.mlp(self.ln2(x))  # (B, L, d)


class TransformerEncoder(nn.Module):
    """Learned positions + a stack of blocks + final LayerNorm."""

    def __init__(self, dim: int, max_len: int, n_layers: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.position_embedding = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, x: Tensor, positions: Tensor, mask: Tensor) -> Tensor:
        """Item embeddings x (B, L, d), positions (B, L), mask (B, 1, L, L) -> (B, L, d)."""
        x = self.dropout(x + self.position_embedding(positions))  # (B, L, d)
        for block in self.blocks:
            x = block(x, mask)  # (B, L, d)
        return self.ln_f(x)  # (B, L, d)
