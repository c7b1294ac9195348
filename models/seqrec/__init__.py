"""Sequential recommenders (CORE, SASRec, GRU4Rec, BERT4Rec, NextItNet) behind one contract.

Sequences are LEFT-padded with index 0 (latest item last); see `base.py`.
"""

from models.seqrec.base import SeqBatch, SequentialRecommender, pad_sequences
from models.seqrec.bert4rec import BERT4Rec, BERT4RecConfig
from models.seqrec.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from models.seqrec.core import CORE, COREConfig
from models.seqrec.data import SeqData, make_windows
from models.seqrec.gru4rec import GRU4Rec, GRU4RecConfig
from models.seqrec.nextitnet import NextItNet, NextItNetConfig
from models.seqrec.registry import ID_MODEL, MODELS, build_model
from models.seqrec.sasrec import SASRec, SASRecConfig
from models.seqrec.train import TrainConfig, TrainResult, evaluate, train
from models.seqrec.vocab import COLD, PAD, ItemVocab

__all__ = [
    "BERT4Rec",
    "BERT4RecConfig",
    "COLD",
    "CORE",
    "COREConfig",
    "Checkpoint",
    "GRU4Rec",
    "GRU4RecConfig",
    "ID_MODEL",
    "ItemVocab",
    "MODELS",
    "NextItNet",
    "NextItNetConfig",
    "PAD",
    "SASRec",
    "SASRecConfig",
    "SeqBatch",
    "SeqData",
    "SequentialRecommender",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "evaluate",
    "load_checkpoint",
    "make_windows",
    "pad_sequences",
    "save_checkpoint",
    "train",
]
