"""The small training job of the training tests, for models that must learn."""

from tests.train.conftest import make_job  # noqa: F401
