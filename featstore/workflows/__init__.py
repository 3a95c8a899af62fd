"""Workflows: what users run, built on featstore's core (store, data, backbones, extract,
tuners, analysis) through its public names only.

tuning / sweep   train and evaluate heads on cached features, one run or a grid
report, demo     tables and plots of results; the end-to-end demo
experiments      recipes chaining pretrain → extract → tune → spectrum → report
pretrain         supervised pre-training of timm models on clean or noisy labels
sharing          copy between roots, pack/unpack
service          the extraction service (HTTP API, job queue, workers, client)
"""
