"""One matrix product for the query, key and value projections of each ESM-2 attention layer.

transformers' `EsmSelfAttention` runs three [hidden -> hidden] products; one [hidden -> 3 * hidden]
product keeps the GPU's matrix units busier on the short sequences of VirNucPro (about 100 tokens).
The arithmetic is unchanged (same weights, same rotary and scaling order), so embeddings agree with
the unfused model to rounding (tested in fp32 on CPU).
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from transformers.models.esm.modeling_esm import EsmSelfAttention, apply_rotary_pos_emb


def fuse_qkv_projections(model) -> int:
    """Give every self-attention layer a fused `[3 * hidden, hidden]` projection; return how many."""
    fused = 0
    for module in model.modules():
        if isinstance(module, EsmSelfAttention) and module.position_embedding_type == "rotary":
            weight = torch.cat([module.query.weight, module.key.weight, module.value.weight]).detach()
            bias = torch.cat([module.query.bias, module.key.bias, module.value.bias]).detach()
            module.qkv = torch.nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
            module.qkv.weight.data.copy_(weight)
            module.qkv.bias.data.copy_(bias)
            module.qkv.requires_grad_(False)
            del module.query, module.key, module.value
            module.forward = types.MethodType(_fused_forward, module)
            fused += 1
    return fused


def _fused_forward(self, hidden_states, attention_mask=None, position_embeddings=None, **_kwargs):
    """hidden_states [batch, length, hidden] -> ([batch, length, hidden], None), as EsmSelfAttention."""
    batch, length, _ = hidden_states.shape
    qkv = self.qkv(hidden_states).view(batch, length, 3, self.num_attention_heads, self.attention_head_size)
    query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [batch, heads, length, head_dim]
    query = query * self.attention_head_size ** -0.5  # ESM scales the query before rotary
    cos, sin = position_embeddings
    query, key = apply_rotary_pos_emb(query, key, cos, sin, unsqueeze_dim=1)
    attended = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=1.0)
    return attended.transpose(1, 2).reshape(batch, length, -1), None
