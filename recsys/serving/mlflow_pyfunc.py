"""The MLflow pyfunc face of an exported artifact (a "model from code": MLflow runs this file, pickles nothing).

`recsys export` logs it with the artifact directory as its one MLflow artifact, so that
`mlflow models serve -m <model uri> --env-manager local` answers POST /invocations with click
probabilities of raw rows given as a DataFrame (`dataframe_records` or `dataframe_split`).

pandas marks a missing value as NaN and turns an integer column with a gap into floats, so rows
are read back as the raw JSON rows of `recsys serve` before encoding: NaN is a missing value and a
whole float is an integer. Everything else is checked by the same encoder as the HTTP server's.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import mlflow.models
import mlflow.pyfunc

ARTIFACT_KEY = "recsys_artifact"

warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")
"""Rows are validated by the artifact's encoder, not by an MLflow schema, so `predict` has no type hints."""


def raw_value(value: Any) -> Any:
    """A DataFrame cell as a raw JSON value: NaN and None missing, whole floats integers."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return int(value)
    if hasattr(value, "item"):  # a numpy scalar
        return raw_value(value.item())
    return value


class ExportedModel(mlflow.pyfunc.PythonModel):
    """Click probabilities of raw rows from a `recsys export` artifact."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from recsys.serving.artifact import ServedModel

        self.served = ServedModel.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a schema
        records = model_input.to_dict(orient="records") if hasattr(model_input, "to_dict") else list(model_input)
        rows = [{field: raw_value(value) for field, value in record.items()} for record in records]
        return self.served.predict(rows).tolist()


mlflow.models.set_model(ExportedModel())
