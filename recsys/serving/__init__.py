"""Serving: raw request rows to model inputs, with no dependency on polars, MLflow or the training code."""
