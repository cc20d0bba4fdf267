"""DKIM signatures (RFC 6376) with RSA-SHA256 or Ed25519-SHA256 (RFC 8463).

relaxed/relaxed canonicalisation over the exact bytes that go on the wire. The signing
is done here with ``cryptography`` directly: a general DKIM library parses every message
again, which costs many times the raw signature. Messages are built by this program, so
each header to sign is known as the bytes written; the body is canonicalised by the
caller in pieces (see :func:`relaxed_body`), so pieces shared by many messages are done
once.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from digest.config import Settings
from digest.core.errors import ConfigError

__all__ = [
    "SIGNED_HEADERS",
    "DkimSigner",
    "generate_key",
    "relaxed_body",
    "relaxed_header",
    "signer_for",
]

#: The headers a message has (or may have) that a reader sees or a client acts on.
#: Each is signed once more than it occurs ("oversigned"), so nobody can add a second
#: one (a second From, Reply-To or Content-Type) without breaking the signature.
_PRESENT = (
    "from",
    "reply-to",
    "to",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
)
#: Headers a message never has that a reader sees or a client acts on: signed as
#: absent, so adding one (a Sender, a List-Post to reply to) breaks the signature.
_ABSENT = (
    "sender",
    "cc",
    "in-reply-to",
    "references",
    "list-post",
    "list-help",
    "list-subscribe",
    "list-owner",
    "list-archive",
)
#: The h= tag's names, in order.
SIGNED_HEADERS = _PRESENT + _ABSENT + _PRESENT


def _folded_names(names: Sequence[str], first: int, width: int = 78) -> str:
    """``names`` joined by colons, folded after a colon so no line passes ``width``."""
    lines = [""]
    room = width - first
    for name in names:
        piece = name if not lines[-1] else f":{name}"
        if lines[-1] and len(lines[-1]) + len(piece) + 1 > room:  # +1: the ";" or ":"
            lines[-1] += ":"
            lines.append(name)
            room = width - 1  # a continuation line starts with a space
        else:
            lines[-1] += piece
    return "\r\n ".join(lines)


_H_TAG = _folded_names(SIGNED_HEADERS, len(" h="))

_WSP_RUN = re.compile(rb"[ \t]+")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")
_FOLD = re.compile(rb"\r\n(?=[ \t])")


def relaxed_body(piece: bytes) -> bytes:
    """The relaxed canonical form (RFC 6376 §3.4.4) of whole lines of a body.

    ``piece`` must consist of whole CRLF-terminated lines; trailing empty lines of the
    whole body are the caller's concern (a MIME body ends in its closing boundary).
    """
    return _TRAILING_WSP.sub(b"\r\n", _WSP_RUN.sub(b" ", piece))


def relaxed_header(field: bytes) -> bytes:
    """One header field (``Name: value``, folded, CRLF at the end) in relaxed form."""
    name, _, value = field.partition(b":")
    value = _WSP_RUN.sub(b" ", _FOLD.sub(b"", value.rstrip(b"\r\n"))).strip(b" ")
    return name.strip().lower() + b":" + value + b"\r\n"


def split_headers(block: bytes) -> Iterable[tuple[bytes, bytes]]:
    """(lower-case name, field with its CRLF) for each header of a block of headers."""
    for field in re.split(rb"\r\n(?![ \t])", block):
        if field:
            yield field.partition(b":")[0].strip().lower(), field + b"\r\n"


@dataclass(frozen=True)
class DkimSigner:
    """Signs with one key as ``selector._domainkey.domain``."""

    domain: str
    selector: str
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @property
    def algorithm(self) -> str:
        return "ed25519-sha256" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "rsa-sha256"

    def header(self, canonical_headers: dict[bytes, bytes], body_hash: bytes, now: int) -> bytes:
        """The DKIM-Signature field (folded, with CRLF) over the headers given.

        ``canonical_headers`` maps each lower-case name to its field in relaxed form; a
        name not in it is signed as absent. ``body_hash`` is the SHA-256 of the body in
        relaxed form.
        """
        # h= is folded between names (RFC 6376 allows FWS around the colons).
        head = (
            f"DKIM-Signature: v=1; a={self.algorithm}; c=relaxed/relaxed;\r\n"
            f" d={self.domain}; s={self.selector}; t={now};\r\n"
            f" h={_H_TAG};\r\n"
            f" bh={base64.b64encode(body_hash).decode('ascii')};\r\n b="
        ).encode("ascii")
        seen: set[bytes] = set()
        signed = []
        for name in SIGNED_HEADERS:
            encoded = name.encode("ascii")
            if encoded in seen:
                continue  # the oversigned instance: there is none, so nothing is hashed
            # (an absent header is likewise signed as absent: nothing is hashed for it)
            seen.add(encoded)
            field = canonical_headers.get(encoded)
            if field is not None:
                signed.append(field)
        signed.append(relaxed_header(head).removesuffix(b"\r\n"))
        data = b"".join(signed)
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            signature = self.key.sign(hashlib.sha256(data).digest())
        else:
            signature = self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        b = base64.b64encode(signature).decode("ascii")
        chunks = [b[i : i + 72] for i in range(0, len(b), 72)]
        return head + "\r\n ".join(chunks).encode("ascii") + b"\r\n"


def load_key(path: Path) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """The private key in a PEM file; ConfigError on ``dkim.key_file`` otherwise."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError("dkim.key_file", f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError("dkim.key_file", f"{path} is not an unencrypted PEM key: {exc}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise ConfigError("dkim.key_file", f"{path}: an RSA key needs at least 1024 bits")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ConfigError("dkim.key_file", f"{path}: only RSA and Ed25519 keys sign DKIM")


def signer_for(settings: Settings, sender_domain: str) -> DkimSigner | None:
    """The signer the settings configure, or None when ``dkim.key_file`` is empty."""
    dkim = settings.dkim
    if not dkim.key_file:
        return None
    path = Path(dkim.key_file)
    if not path.is_absolute():
        path = settings.base_dir / path
    return DkimSigner(dkim.domain or sender_domain, dkim.selector, load_key(path))


def generate_key(algorithm: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """A new private key: 'rsa' (2048 bits) or 'ed25519'."""
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def dns_record(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    """The TXT record's value that publishes the public half of ``key``."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}"
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def zone_line(selector: str, domain: str, record: str) -> str:
    """The record as a zone-file line, split in strings of at most 255 characters."""
    parts: Sequence[str] = [record[i : i + 255] for i in range(0, len(record), 255)]
    quoted = " ".join(f'"{p}"' for p in parts)
    return f"{selector}._domainkey.{domain}. IN TXT ( {quoted} )"
