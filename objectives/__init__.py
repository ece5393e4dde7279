"""The trial's work: models, data, layer groups, pruning (NNI), fine-tuning, evaluation.

``objectives`` knows nothing of Optuna or of storage; it calls :mod:`devices` to deploy.
"""
