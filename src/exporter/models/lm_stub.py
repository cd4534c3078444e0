"""A small causal language model over token ids."""

from __future__ import annotations

import torch
from torch import nn


class LMStub(nn.Module):
    """Token and position embeddings, pre-norm transformer blocks with a causal mask, an LM head.

    The head is a separate Linear (not tied to the embedding), so dynamic quantization of its
    Linear layers shrinks the model. Written to trace cleanly: any batch size and any sequence
    length up to ``max_seq_len`` run through the same TorchScript or ONNX graph.

    Example:
        >>> import torch
        >>> model = LMStub(vocab_size=100, d_model=32, n_heads=2, n_layers=1, max_seq_len=16).eval()
        >>> tuple(model(torch.randint(0, 100, (2, 16))).shape)
        (2, 16, 100)
    """

    def __init__(
        self, vocab_size: int = 1000, d_model: int = 64, n_heads: int = 4, n_layers: int = 2, max_seq_len: int = 128
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.max_seq_len = max_seq_len
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(max_seq_len, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size)
        # -inf above the diagonal: position i attends to positions <= i.

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        positions = torch.arange(seq_len, device=input_ids.device)
        hidden = self.token_embedding(input_ids) + self.position_embedding(positions)
        # Built from the positions rather than sliced from a [max, max] buffer: torch.export fixes a
        # sequence length that slices a buffer to its full size, so the axis could not stay dynamic.
        # (torch.where on the positions, not zeros(seq_len, ...): torch.fx must trace it for static quantization.)
        mask = torch.where(positions[None, :] > positions[:, None], float("-inf"), 0.0)
        for block in self.blocks:
            hidden = block(hidden, mask)
        return self.lm_head(self.norm(hidden))


class _Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"model.d_model ({d_model}) must be divisible by model.n_heads ({n_heads})")
        self.n_heads = n_heads
        self.d_model = d_model
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Sizes from the module's own ints and single shape lookups (no tuple unpacking of tensors or
        # shapes), so that torch.fx can trace the block symbolically.
        batch, seq, dim = x.shape[0], x.shape[1], self.d_model
        head_dim = dim // self.n_heads
        qkv = self.qkv(self.norm1(x))

        def heads(i: int) -> torch.Tensor:
            part = qkv.narrow(-1, i * dim, dim)
            return part.reshape(batch, seq, self.n_heads, head_dim).transpose(1, 2)

        q, k, v = heads(0), heads(1), heads(2)
        scores = q @ k.transpose(-2, -1) / head_dim**0.5 + mask
        attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, seq, dim)
        x = x + self.proj(attended)
        return x + self.mlp(self.norm2(x))
