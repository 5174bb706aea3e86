"""recsys: interchangeable embedding-table strategies for CTR models, trained with torchrec."""

__version__ = "0.1.0"
