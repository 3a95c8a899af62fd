"""Recipes that chain pretrain → extract → tune → spectrum → report, every step cached."""

from featstore.workflows.experiments.noisy_pretraining import SIZES, NoisyPretraining, run as run_noisy_pretraining

EXPERIMENTS = {"noisy-pretraining": (NoisyPretraining, run_noisy_pretraining)}

__all__ = ["EXPERIMENTS", "NoisyPretraining", "SIZES", "run_noisy_pretraining"]
