"""WordPiece tokenizer trained on our own catalog titles and search queries (paper section 4.4, first step).

Titles and queries share one vocabulary because they share one encoder. Lowercase + accent-stripping normalisation
and WordPiece subwords keep typos ("sneakres" -> "sneak ##res") close to the intended word instead of [UNK]. The
vocabulary is learnt by our own small deterministic BPE over word counts (see `_learn_vocab`).
"""

from __future__ import annotations

import heapq
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
MAX_WORD_CHARS = 50  # longer "words" (e.g. URLs) become [UNK]

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


def _learn_vocab(word_counts: Counter[str], cfg: TokenizerConfig) -> dict[str, int]:
    """WordPiece vocabulary from BPE merges over word counts; ties go to the smaller pair, so fully deterministic.

    (The `tokenizers` WordPiece trainer breaks ties in Rust hash-map order and gives a different vocabulary from run
    to run, which would make training irreproducible.)
    """
    words: list[list[str]] = []
    counts: list[int] = []
    for w, c in sorted(word_counts.items()):
        if len(w) <= MAX_WORD_CHARS:
            words.append([w[0], *(f"##{ch}" for ch in w[1:])])
            counts.append(c)
    vocab = [PAD_TOKEN, UNK_TOKEN, *sorted({s for w in words for s in w})]
    known = set(vocab)
    stats: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, w in enumerate(words):
        for pair in zip(w, w[1:], strict=False):
            stats[pair] += counts[i]
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in stats.items()]
    heapq.heapify(heap)
    while len(vocab) < cfg.vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if stats.get(pair, 0) != -neg:  # stale heap entry
            continue
        if -neg < cfg.min_frequency:
            break
        a, b = pair
        merged = a + b[2:]  # b is always a continuation piece "##..."
        touched: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            w, c = words[i], counts[i]
            for p in zip(w, w[1:], strict=False):
                stats[p] -= c
                touched.add(p)
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for p in zip(out, out[1:], strict=False):
                stats[p] += c
                where[p].add(i)
                touched.add(p)
        stats.pop(pair, None)
        for p in sorted(touched - {pair}):
            if stats[p] > 0:
                heapq.heappush(heap, (-stats[p], p))
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
    return {tok: i for i, tok in enumerate(vocab)}


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig = TokenizerConfig()) -> TitleTokenizer:
    """Train a lowercase WordPiece tokenizer on titles + queries; the same texts always give the same vocabulary."""
    tok = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN, max_input_chars_per_word=MAX_WORD_CHARS))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # splits on whitespace and punctuation
    word_counts: Counter[str] = Counter()
    for text in texts:
        if isinstance(text, str) and text:
            word_counts.update(
                w for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))
            )
    tok.model = models.WordPiece(
        vocab=_learn_vocab(word_counts, cfg), unk_token=UNK_TOKEN, max_input_chars_per_word=MAX_WORD_CHARS
    )
    return TitleTokenizer(tok, cfg)
