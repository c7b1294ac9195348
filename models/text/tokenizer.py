"""WordPiece tokenizer trained on our own catalog titles and search queries (paper section 4.4, first step).

Titles and queries share one vocabulary because they share one encoder. Lowercase + accent-stripping normalisation
and WordPiece subwords keep typos ("sneakres" -> "sneak ##re ##s") close to the intended word instead of [UNK].
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Canonical form of a query or title: NFKC, lowercase, single spaces, stripped."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


@dataclass(frozen=True)
class TokenizerConfig:
    """Hyperparameters of the WordPiece tokenizer."""

    vocab_size: int = 8000  # upper bound; a small catalog vocabulary stops well below it
    min_frequency: int = 2  # rarer words are left to subwords
    max_length: int = 48  # tokens kept per text; catalog titles are ~16-24 tokens


class TitleTokenizer:
    """A trained `tokenizers.Tokenizer` that encodes batches to padded id tensors and lengths."""

    def __init__(self, tokenizer: Tokenizer, cfg: TokenizerConfig) -> None:
        self.cfg = cfg
        self._tok = tokenizer
        self.pad_id = tokenizer.token_to_id(PAD_TOKEN)
        if self.pad_id is None:
            raise ValueError(f"tokenizer has no {PAD_TOKEN} token")
        self._tok.enable_truncation(max_length=cfg.max_length)
        self._tok.enable_padding(pad_id=self.pad_id, pad_token=PAD_TOKEN)  # pads to the longest in the batch

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self._tok.get_vocab_size()

    def tokens(self, text: str) -> list[str]:
        """Subword tokens of one text (for inspection)."""
        return self._tok.encode(text).tokens

    def encode_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode texts to (ids (B, T) int64 padded with pad_id, lengths (B,) int64); an empty text gets length 0."""
        if len(texts) == 0:
            return torch.zeros((0, 1), dtype=torch.long), torch.zeros((0,), dtype=torch.long)
        encs = self._tok.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encs], dtype=torch.long)  # (B, T)
        lengths = torch.tensor([sum(e.attention_mask) for e in encs], dtype=torch.long)  # (B,)
        if ids.shape[1] == 0:  # every text was empty
            ids = torch.full((len(texts), 1), self.pad_id, dtype=torch.long)  # (B, 1)
        return ids, lengths

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json and tokenizer_config.json into directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(directory / TOKENIZER_FILE))
        (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(asdict(self.cfg), indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> TitleTokenizer:
        """Read a tokenizer written by `save`."""
        directory = Path(directory)
        cfg = TokenizerConfig(**json.loads((directory / TOKENIZER_CONFIG_FILE).read_text()))
        return cls(Tokenizer.from_file(str(directory / TOKENIZER_FILE)), cfg)


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig = TokenizerConfig()) -> TitleTokenizer:
    """Train a lowercase WordPiece tokenizer on titles + queries; deterministic for the same texts in the same order."""
    tok = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN, max_input_chars_per_word=50))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # splits on whitespace and punctuation
    trainer = trainers.WordPieceTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[PAD_TOKEN, UNK_TOKEN],  # PAD is id 0, the LSTM embedding's padding_idx
        show_progress=False,
    )
    tok.train_from_iterator((t for t in texts if isinstance(t, str) and t), trainer=trainer)
    return TitleTokenizer(tok, cfg)
