"""An artifact is verified as a whole: exactly its listed files, a manifest covered by its own checksum
and valid against its schema, plain names only. Every edit is refused, naming the file or key."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from recsys.export.artifact import export_model
from recsys.export.format import MANIFEST, MANIFEST_CHECKSUM, ArtifactError, verified
from recsys.serving.artifact import ServedModel
from recsys.tables import spec_from_mapping
from recsys.train.config import TrainConfig
from recsys.train.finished import finished_model
from recsys.train.job import Job
from recsys.train.loop import train
from tests.train.conftest import SMALL_MODEL


@pytest.fixture(scope="module")
def original(synthetic_cache, tmp_path_factory):
    config = TrainConfig(epochs=1, batch_size=4096, progress=False)
    job = Job(synthetic_cache, spec_from_mapping({"strategy": "full"}), "dlrm", config, dict(SMALL_MODEL))
    result = train(job)
    return export_model(finished_model(job, result.model), tmp_path_factory.mktemp("format") / "model")


@pytest.fixture
def artifact(original, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(original, copy)
    return copy


def forge(directory, change) -> None:
    """Edit the manifest as a forger would: change it, then write its checksum anew."""
    manifest = json.loads((directory / MANIFEST).read_text())
    change(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest))
    digest = hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()
    (directory / MANIFEST_CHECKSUM).write_text(digest + "\n")


def test_the_written_artifact_verifies_and_lists_its_files(artifact):
    manifest = verified(artifact)
    assert sorted(manifest["files"]) == ["model.pt", "statistics.pt"]
    names = sorted(path.name for path in artifact.iterdir())
    assert names == [MANIFEST, MANIFEST_CHECKSUM, "model.pt", "statistics.pt"]
    assert (artifact / MANIFEST_CHECKSUM).read_text().strip() == hashlib.sha256(
        (artifact / MANIFEST).read_bytes()
    ).hexdigest()


def edit_kind(manifest: dict) -> None:
    field = next(item for item in manifest["encoder"]["raw_fields"] if item["kind"] == "hex")
    field["kind"] = "integer"


def drop_entry(manifest: dict) -> None:
    del manifest["files"]["statistics.pt"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda path: (path / "notes.txt").write_text("x"), "notes.txt is not in the file list"),
        (lambda path: (path / "model.pt").unlink(), "model.pt is missing"),
        (lambda path: (path / MANIFEST_CHECKSUM).unlink(), "manifest.sha256 is missing"),
        (lambda path: (path / MANIFEST).write_text((path / MANIFEST).read_text().replace('"hex"', '"integer"', 1)),
         "manifest.json: checksum mismatch"),
        (lambda path: (path / MANIFEST).write_text((path / MANIFEST).read_text() + " "), "manifest.json: checksum"),
        (lambda path: forge(path, edit_kind) or (path / MANIFEST).write_text("{}"), "manifest.json: checksum"),
        (lambda path: forge(path, drop_entry), "files lists no statistics.pt"),
        (lambda path: forge(path, lambda m: m["files"].update({"../model.pt": m["files"]["model.pt"]})),
         "names '../model.pt', which is not a plain file name"),
        (lambda path: forge(path, lambda m: m["files"].update({"/etc/passwd": "0" * 64})), "names '/etc/passwd'"),
        (lambda path: forge(path, lambda m: m.pop("precision")), "missing required key.*'precision'"),
        (lambda path: forge(path, lambda m: m["model"].update(dense_features="13")), "model: 'dense_features'"),
        (lambda path: forge(path, lambda m: m.update(surprise=1)), "unknown key 'surprise'"),
        (lambda path: forge(path, lambda m: m["encoder"]["raw_fields"][0].pop("kind")),
         r"encoder.raw_fields\[0\]: missing required key.*'kind'"),
        (lambda path: forge(path, lambda m: m.update(format_version=1)), "format 1 is not 2"),
        (lambda path: (path / MANIFEST).write_bytes(b"\xff"), "checksum"),
    ],
    ids=[
        "unlisted", "missing", "no-manifest-checksum", "kind-edited", "manifest-byte", "manifest-replaced",
        "entry-removed", "dot-dot", "absolute", "key-missing", "wrong-type", "unknown-key", "nested-key",
        "old-version", "not-json",
    ],
)  # fmt: skip
def test_every_edit_of_an_artifact_is_refused_by_name(artifact, edit, message):
    edit(artifact)
    with pytest.raises(ArtifactError, match=message):
        ServedModel.load(artifact)


def test_a_forged_entry_cannot_hide_a_changed_file(artifact):
    """Without its entry a file would go unchecked: it is then an unlisted file, and refused."""
    forge(artifact, drop_entry)
    forge(artifact, lambda manifest: None)
    (artifact / "statistics.pt").write_bytes(b"changed")
    with pytest.raises(ArtifactError):
        verified(artifact)


def test_a_link_in_place_of_a_file_is_refused(artifact, tmp_path):
    outside = tmp_path / "outside.pt"
    shutil.copy(artifact / "model.pt", outside)
    (artifact / "model.pt").unlink()
    (artifact / "model.pt").symlink_to(outside)
    with pytest.raises(ArtifactError, match="model.pt is not a plain file"):
        verified(artifact)
