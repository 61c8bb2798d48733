"""The numpy reference forward: plain, readable, slow. It defines the math every engine must match.

For QAT models it reproduces the fake-quantized arithmetic, quantizing and dequantizing at exactly
the points the checkpoint's FakeQuantize modules sit (Linear inputs and weights, both attention
matmuls' inputs and outputs, embedding tables and outputs), so int8 execution can be checked against it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from zoo.convert.bert import BertModel, LayerNorm, Linear, QParams, fake_quant

MASK_VALUE = -10000.0
Observer = Callable[[str, np.ndarray], None]


def erf(x: np.ndarray) -> np.ndarray:
    """Error function (Abramowitz & Stegun 7.1.26 refined: |error| < 1.2e-7), numpy has none built in."""
    z = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (
        0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    y = 1.0 - t * np.exp(poly)
    return (np.sign(x) * y).astype(x.dtype)


def gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0).astype(x.dtype)))).astype(x.dtype)


def layer_norm(x: np.ndarray, ln: LayerNorm) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + ln.eps) * ln.gamma + ln.beta).astype(x.dtype)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class Reference:
    """Callable reference model; ``observe(point, tensor)`` sees every quantization point (for calibration)."""

    def __init__(self, model: BertModel, dtype: type = np.float32, observe: Observer | None = None) -> None:
        self.model, self.dtype, self.observe = model, dtype, observe

    def _point(self, name: str, q: QParams | None, x: np.ndarray) -> np.ndarray:
        if self.observe is not None:
            self.observe(name, x)
        return fake_quant(q, x)

    def linear(self, lin: Linear, x: np.ndarray) -> np.ndarray:
        x = self._point(f"{lin.name}.quant", lin.input_q, x)
        return (x @ lin.weight.T.astype(self.dtype) + lin.bias.astype(self.dtype)).astype(self.dtype)

    def embed(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        e = self.model.embeddings
        seq = input_ids.shape[1]
        if seq > e.position.shape[0]:
            raise ValueError(f"sequence length {seq} exceeds max_position_embeddings {e.position.shape[0]}")
        parts = {"word": e.word[input_ids], "position": e.position[np.arange(seq)][None], "token_type": e.token_type[token_type_ids]}
        total = sum(self._point(f"embeddings.{role}", e.output_q.get(role), v.astype(self.dtype)) for role, v in parts.items())
        return layer_norm(np.asarray(total, dtype=self.dtype), e.ln)

    def encoder_layer(self, i: int, x: np.ndarray, mask_add: np.ndarray) -> np.ndarray:
        layer = self.model.layers[i]
        b, s, h = x.shape
        heads = self.model.config.heads
        d = h // heads
        split = lambda t: t.reshape(b, s, heads, d).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (split(self.linear(lin, x)) for lin in (layer.query, layer.key, layer.value))
        aq = layer.attn_q
        base = f"encoder.layer.{i}.attention.self"
        q = self._point(f"{base}.qk.in0", aq and aq.qk[0], q)
        k = self._point(f"{base}.qk.in1", aq and aq.qk[1], k)
        scores = self._point(f"{base}.qk.out", aq and aq.qk[2], q @ k.transpose(0, 1, 3, 2))
        probs = softmax(scores / np.sqrt(d).astype(self.dtype) + mask_add).astype(self.dtype)
        probs = self._point(f"{base}.pv.in0", aq and aq.pv[0], probs)
        v = self._point(f"{base}.pv.in1", aq and aq.pv[1], v)
        ctx = self._point(f"{base}.pv.out", aq and aq.pv[2], probs @ v)
        ctx = ctx.transpose(0, 2, 1, 3).reshape(b, s, h)
        x = layer_norm(self.linear(layer.attn_out, ctx) + x, layer.ln_attn)
        ffn = self.linear(layer.ffn_out, gelu(self.linear(layer.ffn_in, x)))
        return layer_norm(ffn + x, layer.ln_out)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                 token_type_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
        input_ids = np.asarray(input_ids, dtype=np.int64)
        attention_mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask)
        token_type_ids = np.zeros_like(input_ids) if token_type_ids is None else np.asarray(token_type_ids)
        mask_add = ((1.0 - attention_mask[:, None, None, :].astype(self.dtype)) * MASK_VALUE).astype(self.dtype)
        x = self.embed(input_ids, token_type_ids)
        for i in range(len(self.model.layers)):
            x = self.encoder_layer(i, x, mask_add)
        m = self.model
        if m.head is None or m.head_linear is None:
            return {"last_hidden_state": x}
        if m.head.pooled:
            x = x[:, 0]
            if m.pooler is not None:
                x = np.tanh(self.linear(m.pooler, x)).astype(self.dtype)
        return m.head.outputs_of(self.linear(m.head_linear, x), lambda a, i: a[..., i])


def forward(model: BertModel, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
            token_type_ids: np.ndarray | None = None, dtype: type = np.float32) -> dict[str, np.ndarray]:
    """Run the reference model once; returns outputs by ONNX output name."""
    return Reference(model, dtype)(input_ids, attention_mask, token_type_ids)
