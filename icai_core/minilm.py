"""The bundled MiniLM (a 6-layer BERT) with mean pooling and L2 normalisation, in plain torch.

Why not transformers' `BertModel`: importing it is ~2.9 s and ~145 MB of a cold process on the
2-core Zen 5 (torch itself ~1 s and ~165 MB), paid by every audit that embeds, against a forward pass
that is 14 torch calls per layer. This module makes exactly the calls `BertModel` makes with its SDPA
attention (transformers 5.x: the same linear, layer-norm, exact-GELU and scaled-dot-product calls
in the same order, no mask for a batch without padding, a boolean mask otherwise), so its vectors
are bit for bit those of transformers' model and of sentence-transformers' (fp32 and bf16 autocast):
`tests/test_embed_backend.py` checks it against sentence-transformers, which stays the independent
reference. It reads the weights with safetensors and supports only what the bundled model is
(absolute positions, GELU, no decoder); anything else is refused when loaded, not run wrongly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F


class MiniLMEncoder(torch.nn.Module):
    """`forward(input_ids, attention_mask)` -> (batch, hidden) float32 unit vectors (mean pooled)."""

    def __init__(self, config: dict, weights: dict[str, torch.Tensor], always_mask: bool = False):
        super().__init__()
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu" or \
                config.get("position_embedding_type", "absolute") != "absolute" or config.get("is_decoder"):
            raise ValueError("not a plain BERT encoder with GELU and absolute positions")
        self.hidden = int(config["hidden_size"])  # static, for the ONNX trace (a traced shape is a tensor)
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.n_layers = int(config["num_hidden_layers"])
        # Tracing (the ONNX export) records one path: there the mask is always applied, which an
        # unpadded batch does not change beyond rounding.
        self.always_mask = always_mask
        for name, tensor in weights.items():
            if not name.startswith("pooler.") and name != "embeddings.position_ids":
                self.register_buffer(name.replace(".", "__"), tensor, persistent=False)

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu", always_mask: bool = False) -> MiniLMEncoder:
        from safetensors.torch import load_file

        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        weights = {k.removeprefix("bert."): v for k, v in load_file(str(model_dir / "model.safetensors"), device=device).items()}
        return cls(config, weights, always_mask=always_mask).eval()

    def _w(self, name: str) -> torch.Tensor:
        return self.get_buffer(name.replace(".", "__"))

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self._w(f"{name}.weight"), self._w(f"{name}.bias"))

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (self.hidden,), self._w(f"{name}.weight"), self._w(f"{name}.bias"), self.eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, length = input_ids.shape
        positions = torch.arange(length, device=input_ids.device).unsqueeze(0)
        x = self._w("embeddings.word_embeddings.weight")[input_ids]
        x = x + self._w("embeddings.token_type_embeddings.weight")[torch.zeros_like(input_ids)]
        x = x + self._w("embeddings.position_embeddings.weight")[positions]
        x = self._norm(x, "embeddings.LayerNorm")
        mask = None
        if self.always_mask or not bool(attention_mask.all()):
            mask = attention_mask.bool()[:, None, None, :].expand(batch, 1, length, length)
        heads = self.heads
        head_dim = self.hidden // heads
        for i in range(self.n_layers):
            p = f"encoder.layer.{i}."
            q, k, v = (self._linear(x, p + f"attention.self.{n}").view(batch, length, heads, head_dim).transpose(1, 2)
                       for n in ("query", "key", "value"))
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=head_dim ** -0.5,
                                               is_causal=False)
            a = a.transpose(1, 2).contiguous().reshape(batch, length, heads * head_dim)
            x = self._norm(self._linear(a, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = self._linear(F.gelu(self._linear(x, p + "intermediate.dense")), p + "output.dense")
            x = self._norm(h + x, p + "output.LayerNorm")
        m = attention_mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled.float(), p=2, dim=1)
