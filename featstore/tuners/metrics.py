"""Evaluation metrics (docs/tune.md: what `featstore tune` reports)."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, f1_score,
                                 matthews_corrcoef)

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "mean_per_class_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    return {"pearson": float(pearsonr(y_pred, y_true)[0]),
            "spearman": float(spearmanr(y_pred, y_true)[0]),
            "mse": float(np.mean((y_pred - y_true) ** 2))}
