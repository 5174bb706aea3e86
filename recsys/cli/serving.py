"""`recsys export`, `recsys serve` and `recsys predict`: arguments and what they print."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from recsys.cli.arguments import (
    TRACKING_HELP,
    existing_directory,
    existing_file,
    output_directory,
    output_file,
    port_number,
    positive_int,
    positive_seconds,
    readable,
)
from recsys.cli.threads import add_threads, use_threads


def add_commands(commands: argparse._SubParsersAction) -> None:
    add_export_command(commands)
    add_serve_command(commands)
    add_predict_command(commands)


def add_export_command(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="a trained model (MLflow run or checkpoint) -> a self-contained inference artifact",
        description="Write a weights-only inference artifact (manifest.json with sha256 checksums, model.pt, "
        "statistics.pt) of a trained model: the tables in their serving form (pruned tables compacted), "
        "everything needed to turn raw values into ids as training did, metadata and metrics. SOURCE is an "
        "MLflow run id (a run trained with --checkpoint-dir; the artifact is then also logged to that run as "
        "an MLflow pyfunc model) or a checkpoint directory (--checkpoint-dir of `recsys train`, or one "
        "epoch-NNNN/ in it). The best epoch is exported when early stopping chose one. Loading the artifact "
        "needs torch, torchrec and the model and table code; not the prepared data, polars, MLflow or the "
        "training code.",
    )
    export.add_argument("source", help="MLflow run id, or checkpoint directory (or one epoch-NNNN/ in it)")
    export.add_argument("-o", "--output", type=output_directory, required=True, help="artifact directory to write")
    export.add_argument(
        "--quantize",
        choices=("int8", "fp16"),
        help="store the tables in int8 (with a per-row scale and bias) or fp16; the change in test AUC "
        "against fp32 is measured and recorded in the manifest (default: fp32, as trained)",
    )
    export.add_argument("--tracking-uri", help=TRACKING_HELP)
    export.add_argument(
        "--sign-key",
        type=existing_file,
        default=os.environ.get("RECSYS_SIGNING_KEY"),
        help="sign the artifact with this PEM elliptic-curve private key (OpenSSF model-signing; needs "
        "pip install 'recsys[signing]'); default $RECSYS_SIGNING_KEY, else unsigned",
    )
    export.add_argument(
        "--no-mlflow-model", action="store_true", help="with a run id: do not log the pyfunc model to the run"
    )
    export.add_argument("--model-name", help="pyfunc model name in the run (default model, or model-int8/-fp16)")
    export.set_defaults(handler=run_export)


def add_verify_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verify-key",
        type=existing_file,
        default=os.environ.get("RECSYS_VERIFY_KEY"),
        help="refuse the artifact unless it is signed by the private key of this PEM public key "
        "(default $RECSYS_VERIFY_KEY, else signatures are not checked; the checksums always are)",
    )


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve an exported model over HTTP (predictions and embedding lookups)",
        description="Serve an artifact of `recsys export` with FastAPI on uvicorn: POST /v1/predict "
        '{"rows": [...]}, POST /v1/lookup {"feature": ..., "values": [...]}, GET /v1/metadata, /healthz, '
        "/metrics (Prometheus). Binds to 127.0.0.1 unless --host says otherwise. An artifact whose files do "
        "not match their checksums is refused.",
    )
    serve.add_argument("artifact", type=existing_directory, help="artifact directory from `recsys export`")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=port_number, default=8080, help="port (default 8080)")
    serve.add_argument(
        "--max-rows", type=positive_int, default=4096, help="most rows or values per request (default 4096)"
    )
    serve.add_argument("--max-body-mb", type=positive_int, default=8, help="largest request body in MB (default 8)")
    serve.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch threads per model call (default 1: at batch 1 a second thread's wake-ups cost more than it "
        "saves, p99 18 ms instead of 2.7 ms at 50 requests/s; scale with more server processes)",
    )
    add_connection_limits(serve)
    add_verify_key(serve)
    serve.set_defaults(handler=run_serve)


def add_connection_limits(serve: argparse.ArgumentParser) -> None:
    """The options of `ConnectionLimits`, each defaulting to the dataclass' value."""
    from recsys.serving.connections import ConnectionLimits

    defaults = ConnectionLimits()
    limits = serve.add_argument_group(
        "connection limits", "how long a client may take, and how many connections are held at once "
        "(see serving/README.md; put a reverse proxy in front for anything beyond one machine)",
    )  # fmt: skip
    limits.add_argument(
        "--max-connections", type=positive_int, default=defaults.max_connections,
        help=f"connections held at once; one more gets a 503 at once (default {defaults.max_connections})",
    )  # fmt: skip
    limits.add_argument(
        "--keep-alive-timeout", type=positive_seconds, default=defaults.keep_alive_timeout,
        help=f"seconds an idle keep-alive connection is kept (default {defaults.keep_alive_timeout:g})",
    )  # fmt: skip
    limits.add_argument(
        "--header-timeout", type=positive_seconds, default=defaults.header_timeout,
        help="seconds a client has to send a request's head, from connecting or from its previous answer; "
        f"slower gets a 408 and is closed (default {defaults.header_timeout:g})",
    )  # fmt: skip
    limits.add_argument(
        "--body-timeout", type=positive_seconds, default=defaults.body_timeout,
        help=f"seconds a client has to send a request's body; slower gets a 408 (default {defaults.body_timeout:g})",
    )  # fmt: skip


def add_predict_command(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="score raw files with an exported model (offline batch scoring, AUC when labelled)",
        description="Read raw files of the artifact's dataset format (Criteo TSV, Avazu CSV, ...) exactly as "
        "`recsys data prepare` reads them, streaming and under the same bad-row policy, and write one row "
        "per input row (file, line, score, label) to a parquet file. When the files carry labels, test AUC "
        "and log loss are printed; --evaluate also records them in MLflow.",
    )
    predict.add_argument("artifact", type=existing_directory, help="artifact directory from `recsys export`")
    predict.add_argument("files", type=readable, nargs="+", help="raw files in the artifact's dataset format")
    predict.add_argument(
        "-o", "--output", type=output_file, required=True, help="parquet file to write, e.g. scores.parquet"
    )
    predict.add_argument(
        "--unlabeled", action="store_true", help="the files have no label field (Criteo's and Avazu's test files)"
    )
    predict.add_argument(
        "--skip-bad-rows", action="store_true", help="skip malformed rows and count them (default: stop at the first)"
    )
    add_threads(predict, "scoring")
    predict.add_argument("--batch-rows", type=positive_int, default=8192, help="rows per model call (default 8192)")
    predict.add_argument(
        "--evaluate", action="store_true", help="record AUC and log loss as an MLflow run (needs labelled files)"
    )
    predict.add_argument("--tracking-uri", help=TRACKING_HELP)
    predict.add_argument("--experiment", default="recsys-evaluation", help="MLflow experiment (recsys-evaluation)")
    predict.add_argument("--run-name", help="MLflow run name (default: evaluate <artifact>)")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_verify_key(predict)
    predict.set_defaults(handler=run_predict)


def run_export(arguments: argparse.Namespace) -> None:
    from recsys.export.artifact import check_output, export_model
    from recsys.export.mlflow_model import checkpoint_of_run, log_pyfunc, looks_like_run_id
    from recsys.tracking import resolve_tracking_uri
    from recsys.train.finished import finished_model_of_checkpoint

    precision = arguments.quantize or "fp32"
    source, run_id, tracking_uri, token = Path(arguments.source), None, None, None
    if not source.exists() and looks_like_run_id(arguments.source):
        run_id, tracking_uri = arguments.source, resolve_tracking_uri(arguments.tracking_uri)
        source, token = checkpoint_of_run(run_id, tracking_uri)
    elif not source.exists():
        raise FileNotFoundError(f"{source}: no such checkpoint directory (nor an MLflow run id: 32 hex digits)")
    origin = {"mlflow_run_id": run_id, "tracking_uri": tracking_uri} if run_id else {}
    check_output(arguments.output, [source])  # before the checkpoint is read: a refusal costs nothing
    finished = finished_model_of_checkpoint(source, origin, run_token=token)
    directory = export_model(finished, arguments.output, precision, arguments.sign_key)
    files = ", ".join(sorted(path.name for path in directory.iterdir()))
    print(f"exported {arguments.source} to {directory}/ ({files})")
    print_quantization(directory)
    if run_id and not arguments.no_mlflow_model:
        name = arguments.model_name or ("model" if precision == "fp32" else f"model-{precision}")
        uri = log_pyfunc(directory, run_id, tracking_uri, name)
        print(
            f"logged to MLflow run {run_id} as pyfunc model {name} ({uri}); serve it with\n"
            f"  mlflow models serve -m {uri} --env-manager local"
        )


def print_quantization(directory: Path) -> None:
    import json

    from recsys.export.format import MANIFEST
    from recsys.tables.interface import MemoryReport

    manifest = json.loads((directory / MANIFEST).read_text())
    memory = manifest["memory"]
    quantization = manifest.get("quantization")

    def size(table_bytes: int) -> str:
        return MemoryReport(table_bytes, memory["index_bytes"], 0, memory["full_bytes"]).summary()

    if not quantization:
        print(f"size (fp32): {size(memory['table_bytes'])}")
        return
    before, after = quantization["fp32"], quantization["quantized"]
    print(f"size ({quantization['precision']}): {size(after['table_bytes'])}")
    print(f"size (fp32): {size(before['table_bytes'])}")
    if "auc_change" in quantization:
        print(f"test AUC {before['auc']:.5f} (fp32) -> {after['auc']:.5f}: change {quantization['auc_change']:+.2e}")
    else:
        print("test AUC change: not measured (the prepared data has no test rows)")


def run_serve(arguments: argparse.Namespace) -> None:
    import torch

    from recsys.serving.artifact import ServedModel
    from recsys.serving.connections import ConnectionLimits, listening_socket, serve_app
    from recsys.serving.server import create_app

    torch.set_num_threads(arguments.threads)
    served = ServedModel.load(arguments.artifact, arguments.verify_key)
    limits = ConnectionLimits(
        max_connections=arguments.max_connections, keep_alive_timeout=arguments.keep_alive_timeout,
        header_timeout=arguments.header_timeout, body_timeout=arguments.body_timeout,
    )  # fmt: skip
    app = create_app(served, arguments.max_rows, arguments.max_body_mb << 20, limits.body_timeout)
    listener = listening_socket(arguments.host, arguments.port, backlog=max(2048, limits.max_connections))
    print(f"serving {arguments.artifact} on http://{arguments.host}:{arguments.port} (Ctrl-C stops)", flush=True)
    serve_app(app, listener, limits)


def run_predict(arguments: argparse.Namespace) -> None:
    from tqdm import tqdm

    from recsys.serving.artifact import ServedModel
    from recsys.serving.scoring import ScoringOptions, score_files

    if arguments.evaluate and arguments.unlabeled:
        raise ValueError("--evaluate needs labels; the files were declared --unlabeled")
    tracker = evaluation_tracker(arguments) if arguments.evaluate else None
    use_threads(arguments.threads)
    served = ServedModel.load(arguments.artifact, arguments.verify_key)
    options = ScoringOptions(
        labelled=not arguments.unlabeled, skip_bad_rows=arguments.skip_bad_rows, batch_rows=arguments.batch_rows
    )
    with tqdm(unit="rows", unit_scale=True, desc="predict", disable=arguments.no_progress) as bar:
        result = score_files(served, arguments.files, arguments.output, options, on_rows=bar.update)
    print(f"scored {result.rows:,} rows into {result.output}; {result.bad_rows['summary']}")
    for name in ("auc", "logloss"):
        if name in result.metrics:
            print(f"{name:>10}: {result.metrics[name]:.6g}")
    if not arguments.unlabeled and not result.metrics:
        reason = "no rows were scored" if result.rows == 0 else "the labels are all one class"
        print(f"no AUC: {reason}", file=sys.stderr)
    if tracker is not None:
        run_id = tracker(served.manifest, arguments, result)
        print(f"MLflow run {run_id}")


def evaluation_tracker(arguments: argparse.Namespace):
    """A function recording an evaluation as an MLflow run (the store is checked now, before scoring)."""
    from recsys.tracking import connect, resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(arguments.tracking_uri)
    client, experiment_id = connect(tracking_uri, arguments.experiment)

    def record(manifest: dict, arguments: argparse.Namespace, result) -> str:
        from mlflow.entities import Metric, Param

        source = manifest.get("source") or {}
        tags = {"recsys.artifact": str(arguments.artifact.resolve())}
        if source.get("mlflow_run_id"):
            tags["recsys.source_run"] = source["mlflow_run_id"]
        run_name = arguments.run_name or f"evaluate {arguments.artifact.name}"
        run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        params = {
            "files": ",".join(str(path) for path in arguments.files)[:6000],
            "model": manifest["model"]["name"],
            "strategy": manifest["tables"]["strategy"],
            "precision": manifest.get("precision", "fp32"),
            "bad_rows": result.bad_rows["skipped"],
        }
        metrics = [Metric(f"predict/{name}", value, 0, 0) for name, value in result.metrics.items()]
        client.log_batch(run_id, metrics=metrics, params=[Param(key, str(value)) for key, value in params.items()])
        client.set_terminated(run_id)
        return run_id

    return record
