"""featstore's tuning methods, registered in the order every listing shows them (the
baseline first, as in the paper's tables). Each factory imports its estimator (and so
torch) only when called."""

from __future__ import annotations

from typing import Any

from featstore.tuners.registry import register_tuner

#: Defaults of the shared training options, as the estimators define them (shown in the
#: help; tests/test_registries.py checks that they match).
TRAINING_DEFAULTS = {"epochs": 30, "batch_size": 64}


@register_tuner(description="logistic regression (scikit-learn L-BFGS), C chosen on a "
                "validation split", estimator="featstore.tuners.logreg:LogRegBaseline",
                task="classification", saves_heads=False, not_used={
                    "device": (("auto", "cpu"), "logreg runs on the CPU (scikit-learn) and "
                               "would not use the GPU. Pass --device cpu or auto (accepted by "
                               "every method), or train lp/mlp/nmtune on the GPU"),
                    "stream": (("auto", "never"), "logreg always loads the features into "
                               "memory; it cannot stream them. Pass --stream auto or never, "
                               "or use lp/mlp/nmtune"),
                    "epochs": ((), "logreg fits L-BFGS to convergence and picks C on a "
                               "validation split, so it has no epochs. Leave --epochs out for "
                               "logreg"),
                    "lr": ((), "logreg (L-BFGS) has no learning rate. Leave --lr out for logreg"),
                    "batch_size": ((), "logreg is full-batch. Leave --batch-size out for logreg"),
                })
def logreg(*, dim: int, random_state: int | None = 0, **params: Any) -> Any:
    from featstore.tuners.logreg import LogRegBaseline

    return LogRegBaseline(random_state=random_state, **params)


@register_tuner(description="linear probe: a linear classifier on the frozen features",
                estimator="featstore.tuners.models:LinearProbe",
                defaults={**TRAINING_DEFAULTS, "lr": 0.01}, demo=True)
def lp(*, dim: int, random_state: int | None = 0, **params: Any) -> Any:
    from featstore.tuners.models import LinearProbe

    return LinearProbe(random_state=random_state, **params)


@register_tuner(description="MLP tuning: z = MLP(f), a linear classifier on z",
                estimator="featstore.tuners.models:MLPTuner",
                defaults={**TRAINING_DEFAULTS, "lr": 0.001}, demo=True)
def mlp(*, dim: int, random_state: int | None = 0, **params: Any) -> Any:
    from featstore.tuners.models import MLPTuner

    return MLPTuner(random_state=random_state, **params)


@register_tuner(description="NMTune: MLP tuning with consistency, covariance and "
                "dominant-singular-value terms", estimator="featstore.tuners.models:NMTune",
                defaults={**TRAINING_DEFAULTS, "lr": 0.001}, demo=True)
def nmtune(*, dim: int, random_state: int | None = 0, **params: Any) -> Any:
    from featstore.tuners.models import NMTune

    return NMTune(random_state=random_state, **params)


@register_tuner("nmtune-authors", description="NMTune as in the authors' code (4·D hidden, "
                "BatchNorm, residual; their loss weights)",
                estimator="featstore.tuners.models:NMTune",
                defaults={**TRAINING_DEFAULTS, "lr": 0.001},
                fixed=("lambda_mse", "lambda_cov", "lambda_svd", "svd_top_k",
                       "consistency_reduction", "hidden", "batchnorm", "residual"))
def nmtune_authors(*, dim: int, random_state: int | None = 0, **params: Any) -> Any:
    from featstore.tuners.models import NMTune

    return NMTune.authors_variant(dim, random_state=random_state, **params)
