"""`featstore pretrain`: supervised pre-training on clean or noisy labels, with a model
card that carries the noise into every feature set extracted from the weights."""

from featstore.backbones.card import CARD_FORMAT, read_card_beside
from featstore.workflows.pretrain.train import PretrainConfig, pretrain

__all__ = ["CARD_FORMAT", "PretrainConfig", "pretrain", "read_card_beside"]
