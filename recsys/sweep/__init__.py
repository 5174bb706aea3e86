"""Sweeps: an experiment file's grid of runs in MLflow (`runner`), and the report over them (`report`)."""
