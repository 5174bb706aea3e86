"""Optional provenance: sign an artifact with a private key, verify it with the public key.

The artifact's own checksums (`recsys.export.format`) prove that no byte changed since its manifest
was written, not who wrote it. Signing adds that, with the OpenSSF `model-signing` package (the
ecosystem's tool for model provenance): an elliptic-curve private key (PEM) signs a digest of every
file of the artifact into `signature.sig` beside them, offline; whoever holds the public key can
check it (`recsys serve` / `recsys predict --verify-key`, or RECSYS_VERIFY_KEY). Install it with
`pip install 'recsys[signing]'`.
"""

from __future__ import annotations

from pathlib import Path

from recsys.export.format import SIGNATURE, ArtifactError

SIGNING_KEY_VARIABLE = "RECSYS_SIGNING_KEY"
VERIFY_KEY_VARIABLE = "RECSYS_VERIFY_KEY"


def model_signing():
    try:
        import model_signing
    except ImportError as error:
        raise ArtifactError(
            f"signing needs the model-signing package ({error}); install it with pip install 'recsys[signing]'"
        ) from None
    return model_signing


def check_key(key: Path, what: str) -> None:
    if not key.is_file():
        raise FileNotFoundError(f"{what} {key}: no such file (a PEM elliptic-curve key)")


def sign_artifact(directory: Path, private_key: Path) -> None:
    """Write `signature.sig` into `directory`: every other file of it, signed with `private_key`."""
    check_key(private_key, "signing key")
    signing = model_signing()
    hashing = signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE])
    try:
        config = signing.signing.Config().set_hashing_config(hashing).use_elliptic_key_signer(private_key=private_key)
        config.sign(directory, directory / SIGNATURE)
    except ValueError as error:  # the key file is not a usable private key
        raise ArtifactError(f"signing key {private_key}: {error}") from None


def verify_signature(directory: Path, public_key: Path) -> None:
    """Refuse an artifact that is unsigned, or whose files are not what `public_key`'s owner signed."""
    check_key(public_key, "verify key")
    if not (directory / SIGNATURE).is_file():
        raise ArtifactError(f"{directory / SIGNATURE} is missing: the artifact is not signed")
    signing = model_signing()
    try:
        signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(
            directory, directory / SIGNATURE
        )
    except Exception as error:  # the library raises ValueError and its own kinds for a bad signature or key
        raise ArtifactError(f"{directory}: signature not valid for {public_key}: {str(error)[:300]}") from None
