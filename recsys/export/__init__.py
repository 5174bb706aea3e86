"""Export: a trained model as a self-contained, weights-only inference artifact (see `recsys.serving.artifact`)."""
