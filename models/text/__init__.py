"""Text models: tokenizer, shared query/title encoders, triplet training and the query-product memory."""

from models.text.encoder import (
    HashingNgramConfig,
    HashingNgramEncoder,
    LSTMEncoderConfig,
    LSTMTextEncoder,
    LSTMTitleEncoder,
    MiniLMEncoder,
    OpenClipTextEncoder,
    TextEncoder,
    load_text_encoder,
)
from models.text.memory import (
    MemoryConfig,
    MemoryHit,
    MemoryRecord,
    QueryProductMemory,
    aggregate_query_products,
    build_query_memory,
)
from models.text.tokenizer import TitleTokenizer, TokenizerConfig, normalize_text, train_tokenizer
from models.text.train import (
    TitleTrainConfig,
    TrainResult,
    build_pairs,
    embed_catalog,
    load_title_model,
    save_title_model,
    train_title_model,
)
from models.text.triplet import TripletConfig, in_batch_triplet_loss, positive_mask

__all__ = [
    "HashingNgramConfig",
    "HashingNgramEncoder",
    "LSTMEncoderConfig",
    "LSTMTextEncoder",
    "LSTMTitleEncoder",
    "MemoryConfig",
    "MemoryHit",
    "MemoryRecord",
    "MiniLMEncoder",
    "OpenClipTextEncoder",
    "QueryProductMemory",
    "TextEncoder",
    "TitleTokenizer",
    "TitleTrainConfig",
    "TokenizerConfig",
    "TrainResult",
    "TripletConfig",
    "aggregate_query_products",
    "build_pairs",
    "build_query_memory",
    "embed_catalog",
    "in_batch_triplet_loss",
    "load_text_encoder",
    "load_title_model",
    "normalize_text",
    "positive_mask",
    "save_title_model",
    "train_title_model",
    "train_tokenizer",
]
