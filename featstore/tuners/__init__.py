"""Tuners on cached features (issue 3, in progress): the NMTune regularisers so far."""

from .regularizers import consistency_loss, covariance_loss, singular_value_loss

__all__ = ["consistency_loss", "covariance_loss", "singular_value_loss"]
