"""Every command on a list of bad invocations: exit status 2, no traceback, one line naming the culprit.

Each case is a command line with placeholders and the text its error must contain. Artifacts and
checkpoints that are wrong in ways their checksums cannot see (a manifest rewritten with fresh checksums,
a pickle in place of a tensor file) are made here with hashlib, apart from the code under test.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import pickle
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from recsys.cli import main


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite_artifact_file(directory: Path, name: str, content: bytes) -> None:
    """Replace one file of an artifact and make every checksum agree with it again."""
    (directory / name).write_bytes(content)
    manifest_path = directory / "manifest.json"
    if name != "manifest.json":
        manifest = json.loads(manifest_path.read_text())
        manifest["files"][name] = sha256_of(directory / name)
        manifest_path.write_text(json.dumps(manifest))
    (directory / "manifest.sha256").write_text(sha256_of(manifest_path) + "\n")


def edit_manifest(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        manifest = json.loads((directory / "manifest.json").read_text())
        replaced = change(manifest)
        manifest = manifest if replaced is None else replaced
        rewrite_artifact_file(directory, "manifest.json", json.dumps(manifest).encode())

    return edit


def cut_in_half(directory: Path) -> None:
    data = (directory / "model.pt").read_bytes()
    rewrite_artifact_file(directory, "model.pt", data[: len(data) // 2])


def pickled(directory: Path) -> None:
    rewrite_artifact_file(directory, "model.pt", pickle.dumps({"weights": [1.0, 2.0]}))


def deeply_nested(directory: Path) -> None:
    rewrite_artifact_file(directory, "manifest.json", b"[" * 100_000 + b"]" * 100_000)


def widen_bottom_mlp(manifest: dict) -> None:
    overrides = manifest["model"]["overrides"]
    overrides["bottom_mlp"] = [2 * width for width in overrides["bottom_mlp"]]


ARTIFACT_DAMAGE = {
    "not-an-object": edit_manifest(lambda manifest: [manifest]),
    "no-model-key": edit_manifest(lambda manifest: manifest.pop("model") and None),
    "model-wider": edit_manifest(widen_bottom_mlp),
    "other-strategy": edit_manifest(lambda manifest: manifest.update(tables={"strategy": "qr", "compression": 10})),
    "deeply-nested": deeply_nested,
    "cut-model": cut_in_half,
    "pickled-model": pickled,
}
ARTIFACT_CULPRIT = {
    "not-an-object": "not a JSON object",
    "no-model-key": "model",
    "model-wider": "does not describe the model",
    "other-strategy": "does not describe the model",
    "deeply-nested": "manifest.json",
    "cut-model": "model.pt: not a tensor file",
    "pickled-model": "model.pt: holds Python objects",
}


def widen_checkpoint(directory: Path) -> None:
    """The checkpoint's progress file claims a wider bottom MLP than its tensors hold; checksums agree."""
    epoch = next(directory.glob("epoch-*"))
    progress = json.loads((epoch / "progress.json").read_text())
    progress["job"]["model"]["bottom_mlp"] = [64]
    (epoch / "progress.json").write_text(json.dumps(progress))
    listed = json.loads((epoch / "checksums.json").read_text())
    listed["progress.json"] = sha256_of(epoch / "progress.json")
    (epoch / "checksums.json").write_text(json.dumps(listed))


def truncate_checkpoint(directory: Path) -> None:
    tensors = next(directory.glob("epoch-*/*.distcp"))
    tensors.write_bytes(tensors.read_bytes()[:100])


@pytest.fixture(scope="module")
def places(synthetic_cache, checkpoints, tmp_path_factory) -> dict[str, str]:
    """Real inputs to break: a cache, a checkpoint, an artifact exported from it, a plain file, bad raw files."""
    root = tmp_path_factory.mktemp("bad-invocations")
    assert main(["export", str(checkpoints), "-o", str(root / "artifact")]) == 0
    (root / "file").write_text("a plain file\n")
    (root / "spec.toml").write_text('strategy = "hashing"\ncompression = 10\n')
    (root / "typo.toml").write_text('strategy = "hashing"\nrowz = 5\n')
    (root / "not.toml").write_text("strategy: hashing\n")
    row = b"1\t" + b"\t".join(b"%d" % value for value in range(13)) + b"\t" + b"\t".join(b"%08x" % v for v in range(26))
    (root / "latin.tsv").write_bytes(row + b"\n" + row.replace(b"00000003", b"caf\xe9\xe9\xe9\xe9") + b"\n")
    (root / "trailing.tsv.gz").write_bytes(gzip.compress(row + b"\n") + b"junk")
    (root / "ragged.tsv.bz2").write_bytes(bz2.compress(row + b"\n1\t2\n"))
    (root / "zstd.tsv").write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 64)
    return {
        "cache": str(synthetic_cache.path),
        "checkpoint": str(checkpoints),
        "artifact": str(root / "artifact"),
        "root": str(root),
        "file": str(root / "file"),
    }


def damaged_artifact(places: dict[str, str], tmp_path: Path, damage: str) -> str:
    copy = tmp_path / f"artifact-{damage}"
    shutil.copytree(places["artifact"], copy)
    ARTIFACT_DAMAGE[damage](copy)
    return str(copy)


def damaged_checkpoint(places: dict[str, str], tmp_path: Path, damage: Callable[[Path], None]) -> str:
    copy = tmp_path / "checkpoint"
    shutil.copytree(places["checkpoint"], copy)
    damage(copy)
    return str(copy)


TRAIN = ["train", "--data", "{cache}", "--tables", "{root}/spec.toml", "--no-tracking", "--no-progress"]
CASES = [
    (["data", "synth", "-o", "{file}/rows.tsv"], "argument -o/--output: cannot create"),
    (["data", "synth", "-o", "{root}"], "is a directory; give a file name"),
    (["data", "synth", "-o", "{tmp}/rows.tsv", "--rows", "0"], "argument --rows"),
    (["data", "synth", "-o", "{file}", "--rows", "5"], "file already exists; give --overwrite"),
    (["data", "synth", "-o", "{tmp}/rows.tsv", "--profile", "terabyte", "--cardinality-scale", "20"], "at most 14"),
    (["data", "synth", "-o", "{tmp}/rows.tsv", "--days", "3", "--daily-churn", "1.5"], "daily_churn must be in"),
    (["data", "prepare", "{root}/missing.tsv", "-o", "{tmp}/cache"], "missing.tsv does not exist"),
    (["data", "prepare", "{root}/latin.tsv", "-o", "{tmp}/cache"], "latin.tsv:2: C4: bytes that are not UTF-8"),
    (["data", "prepare", "{root}/trailing.tsv.gz", "-o", "{tmp}/cache"], "trailing.tsv.gz:2: 4 bytes that are not"),
    (["data", "prepare", "{root}/ragged.tsv.bz2", "-o", "{tmp}/cache"], "ragged.tsv.bz2:2: expected 40"),
    (["data", "prepare", "{root}/zstd.tsv", "-o", "{tmp}/cache"], "zstd.tsv: is zstd-compressed"),
    (["data", "prepare", "{root}/latin.tsv", "-o", "{file}/cache"], "argument -o/--output: cannot create"),
    (["data", "prepare", "{root}/latin.tsv", "-o", "{file}"], "is a file; give a directory"),
    (["data", "prepare", "{root}/latin.tsv", "-o", "{tmp}/cache", "--split", "nan,0,0"], "argument --split"),
    (["data", "prepare", "{root}/latin.tsv", "-o", "{tmp}/cache", "--shuffle", "-1"], "argument --shuffle"),
    (["data", "prepare", "{root}/latin.tsv", "-o", "{cache}"], "already exists"),
    (["train", "--data", "{root}/missing", "--tables", "{root}/spec.toml"], "argument --data: "),
    (["train", "--data", "{file}", "--tables", "{root}/spec.toml"], "argument --data: "),
    (["train", "--data", "{root}", "--tables", "{root}/spec.toml", "--no-tracking"], "not a prepared cache"),
    (["train", "--data", "{cache}", "--tables", "{root}/missing.toml"], "argument --tables: "),
    (["train", "--data", "{cache}", "--tables", "{root}/typo.toml", "--no-tracking"], "unknown key 'rowz'"),
    (["train", "--data", "{cache}", "--tables", "{root}/not.toml", "--no-tracking"], "not.toml: not valid TOML"),
    ([*TRAIN, "--model", "nosuch"], "unknown model 'nosuch'"),
    ([*TRAIN, "--epochs", "0"], "--epochs"),
    ([*TRAIN, "--set", "model.nosuch=1"], "unknown key 'nosuch'"),
    ([*TRAIN, "--set", "tables.rowz=5"], "unknown key 'rowz'"),
    ([*TRAIN, "--set", "train.epochs=2", "--epochs", "3"], "--epochs and --set train.epochs both given"),
    ([*TRAIN, "--set", "dropout=0.2"], "argument --set"),
    ([*TRAIN, "--set", "models.dcnv2.cross_layers=2"], "sets the dcnv2 model but --model is"),
    ([*TRAIN, "--set", "models..dropout=0.1"], "argument --set"),
    ([*TRAIN, "--checkpoint-dir", "{file}/checkpoints"], "argument --checkpoint-dir: cannot create"),
    ([*TRAIN, "--checkpoint-dir", "{checkpoint}", "--resume", "--top-mlp", "8"], "belongs to another run"),
    ([*TRAIN[:-2], "--tracking-uri", "sqlite:///{file}/mlflow.db"], "cannot use the MLflow tracking store"),
    (["sweep", "{root}/missing.toml"], "argument experiment: "),
    (["tune", "{root}/missing.toml"], "argument experiment: "),
    (["tune", "{root}/not.toml"], "not.toml: not valid TOML"),
    (["sweep", "{root}/not.toml"], "not.toml: not valid TOML"),
    (["report", "{root}/missing.toml"], "missing.toml: no such file"),
    (["export", "{root}/missing", "-o", "{tmp}/out"], "no such checkpoint directory"),
    (["export", "{checkpoint}", "-o", "{file}/out"], "argument -o/--output: cannot create"),
    (["export", "{truncated_checkpoint}", "-o", "{tmp}/out"], "checksum mismatch"),
    (["export", "{widened_checkpoint}", "-o", "{tmp}/out"], "do not fit the model its progress.json describes"),
    (["serve", "{root}/missing"], "argument artifact: "),
    (["serve", "{file}"], "argument artifact: "),
    (["serve", "{artifact}", "--port", "99999"], "argument --port"),  # valid ones below are busy: never serves
    (["serve", "{artifact}", "--port", "{busy_port}"], "cannot listen there"),
    (["serve", "{artifact}", "--host", "10.255.255.1", "--port", "{free_port}"], "not an address of this machine"),
    (["predict", "{artifact}", "{root}/missing.tsv", "-o", "{tmp}/s.parquet"], "argument files: "),
    (["predict", "{artifact}", "{root}/latin.tsv", "-o", "{root}"], "is a directory; give a file name"),
    (["predict", "{artifact}", "{root}/latin.tsv", "-o", "{tmp}/s.parquet"], "latin.tsv:2: C4: bytes that are not"),
    (["predict", "{artifact}", "{root}/latin.tsv", "-o", "{tmp}/s.parquet", "--batch-rows", "0"], "--batch-rows"),
    *[(["predict", f"{{damaged:{name}}}", "{root}/latin.tsv", "-o", "{tmp}/s.parquet"], ARTIFACT_CULPRIT[name])
      for name in ARTIFACT_DAMAGE],
    (["serve", "{damaged:model-wider}", "--port", "{busy_port}"], "does not describe the model"),
]  # fmt: skip


def filled(argument: str, places: dict[str, str], tmp_path: Path, busy: socket.socket) -> str:
    if argument.startswith("{damaged:"):
        return damaged_artifact(places, tmp_path, argument.removeprefix("{damaged:").removesuffix("}"))
    if argument == "{truncated_checkpoint}":
        return damaged_checkpoint(places, tmp_path, truncate_checkpoint)
    if argument == "{widened_checkpoint}":
        return damaged_checkpoint(places, tmp_path, widen_checkpoint)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
    values = {**places, "tmp": str(tmp_path), "busy_port": busy.getsockname()[1], "free_port": free_port}
    return argument.format(**values)


@pytest.fixture
def busy_socket():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener


@pytest.mark.parametrize(("command", "culprit"), CASES, ids=[" ".join(command) for command, _ in CASES])
def test_a_bad_invocation_is_one_line_naming_the_culprit_with_exit_2(
    command, culprit, places, tmp_path, busy_socket, capsys, monkeypatch
):
    monkeypatch.delenv("RECSYS_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    argv = [filled(argument, places, tmp_path, busy_socket) for argument in command]
    try:
        status = main(argv)
    except SystemExit as stopped:  # argparse: usage, then the error line
        status = stopped.code
    error = capsys.readouterr().err
    last_line = error.replace("\r", "\n").rstrip().splitlines()[-1]
    assert status == 2, error
    assert "Traceback" not in error
    assert last_line.startswith("recsys ") and " error: " in last_line, error
    assert culprit in last_line, error
