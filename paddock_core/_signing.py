"""Signed audit checkpoints: Ed25519 over `"{org_id}:{seq}:{hash}"`.

A verifier holding the public key can prove that a ledger was not rewritten wholesale: a
rewritten chain cannot reproduce the head hash a checkpoint signed before the rewrite.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["CheckpointSigner", "check_checkpoints", "verify_checkpoint_signature"]


def _message(org_id: str, seq: int, head_hash: str) -> bytes:
    return f"{org_id}:{seq}:{head_hash}".encode()


class CheckpointSigner:
    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 signing key is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = base64.b64encode(raw).decode()
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

    @classmethod
    def from_setting(cls, value: str | None, *, fallback_secret: str) -> CheckpointSigner:
        """A base64 32-byte seed, or (development) one derived from the secret key."""
        if value:
            return cls(base64.b64decode(value))
        return cls(hashlib.sha256(f"paddock-audit-signing:{fallback_secret}".encode()).digest())

    def sign(self, org_id: str, seq: int, head_hash: str) -> str:
        return self._key.sign(_message(org_id, seq, head_hash)).hex()


def verify_checkpoint_signature(
    public_key_b64: str, org_id: str, seq: int, head_hash: str, signature_hex: str
) -> bool:
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
    try:
        key.verify(bytes.fromhex(signature_hex), _message(org_id, seq, head_hash))
    except (InvalidSignature, ValueError):
        return False
    return True


def check_checkpoints(
    public_key: str,
    org_id: str,
    checkpoints: Iterable[tuple[int, str, str]],
    hashes: Mapping[int, str],
    *,
    chain_broken: bool,
) -> tuple[int, str | None]:
    """Check signed checkpoints `(seq, hash, signature)` against the hashes a verifier read
    (`hashes`: seq -> hash, at least at every checkpoint's seq). Returns how many held, and the
    first problem (None when all held). A checkpoint past the end of an intact chain is a
    problem (records were cut off); past a broken one, the break is already the finding."""
    checked = 0
    for seq, head, signature in sorted(checkpoints):
        if not verify_checkpoint_signature(public_key, org_id, seq, head, signature):
            return checked, f"checkpoint at seq {seq} has an invalid signature"
        if seq in hashes:
            if hashes[seq] != head:
                return checked, f"the chain at seq {seq} differs from the signed checkpoint"
        elif not chain_broken:
            return checked, f"the chain ends before the signed checkpoint at seq {seq}"
        checked += 1
    return checked, None
