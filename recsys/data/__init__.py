"""Raw click logs in, prepared columnar caches and batches out. Knows nothing of models or MLflow."""
