"""Training: the loop, evaluation, checkpoints and torchrec sharding. Emits events; knows no MLflow."""
