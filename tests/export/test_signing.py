"""Optional signing (OpenSSF model-signing): a signed artifact verifies with its public key; an unsigned one,
another key's, or one whose files were changed and re-checksummed by a forger, is refused."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from recsys.cli import main
from recsys.export.format import MANIFEST, MANIFEST_CHECKSUM, SIGNATURE, ArtifactError, verified
from recsys.serving.artifact import ServedModel

pytest.importorskip("model_signing", reason="model-signing is not installed (pip install 'recsys[signing]')")


def key_pair(directory, name: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def test_a_signed_artifact_verifies_and_every_forgery_is_refused(checkpoints, tmp_path, capsys):
    private, public = key_pair(tmp_path, "ours")
    _, other = key_pair(tmp_path, "theirs")
    artifact, unsigned = tmp_path / "model", tmp_path / "unsigned"
    assert main(["export", str(checkpoints), "-o", str(artifact), "--sign-key", str(private)]) == 0
    assert main(["export", str(checkpoints), "-o", str(unsigned)]) == 0
    assert (artifact / SIGNATURE).is_file() and verified(artifact)
    ServedModel.load(artifact, verify_key=public)
    with pytest.raises(ArtifactError, match="not valid"):
        ServedModel.load(artifact, verify_key=other)
    with pytest.raises(ArtifactError, match="signature.sig is missing"):
        ServedModel.load(unsigned, verify_key=public)
    forged = tmp_path / "forged"
    shutil.copytree(artifact, forged)
    manifest = json.loads((forged / MANIFEST).read_text())
    manifest["metrics"]["val/auc"] = 0.99  # a forger edits the manifest and writes its checksum anew
    (forged / MANIFEST).write_text(json.dumps(manifest))
    (forged / MANIFEST_CHECKSUM).write_text(hashlib.sha256((forged / MANIFEST).read_bytes()).hexdigest() + "\n")
    verified(forged)  # the checksums alone cannot tell
    with pytest.raises(ArtifactError, match="not valid"):
        ServedModel.load(forged, verify_key=public)
    rows = tmp_path / "rows.tsv"
    rows.write_text("")
    command = ["predict", str(forged), str(rows), "-o", str(tmp_path / "s.parquet"), "--verify-key", str(public)]
    assert main(command) == 2
    assert "signature not valid" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main(["export", str(checkpoints), "-o", str(tmp_path / "x"), "--sign-key", str(tmp_path / "no.pem")])
    assert stopped.value.code == 2 and "argument --sign-key" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
