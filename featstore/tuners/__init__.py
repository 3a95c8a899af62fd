"""Tuners on cached features: LP, MLP tuning and NMTune (scikit-learn contract), and
NMTune's regularisers for any PyTorch loop."""

from featstore.tuners.base import BaseTuner, NotFittedError
from featstore.tuners.models import LinearProbe, MLPTuner, NMTune
from featstore.tuners.regularizers import consistency_loss, covariance_loss, singular_value_loss

#: Registry by class name (used to load saved heads) and by short name.
TUNERS = {"LinearProbe": LinearProbe, "MLPTuner": MLPTuner, "NMTune": NMTune}
SHORT_NAMES = {"lp": LinearProbe, "mlp": MLPTuner, "nmtune": NMTune}

__all__ = ["BaseTuner", "LinearProbe", "MLPTuner", "NMTune", "NotFittedError", "TUNERS",
           "SHORT_NAMES", "consistency_loss", "covariance_loss", "singular_value_loss"]
