"""``digest dkim``: the keys that sign the newsletters."""

from __future__ import annotations

import os
from pathlib import Path

import click

from digest.cli.base import cli, example
from digest.core.errors import DigestError


@cli.group(epilog=example("digest dkim keygen --selector digest --domain kommune-digital.example"))
def dkim() -> None:
    """DKIM keys that sign the newsletters ([dkim] in the config)."""


@dkim.command(
    "keygen",
    epilog=example("digest dkim keygen --selector digest --domain kommune-digital.example"),
)
@click.option("--selector", required=True, help="DKIM selector (dkim.selector).")
@click.option("--domain", required=True, help="Signing domain (dkim.domain).")
@click.option(
    "--algorithm",
    type=click.Choice(["rsa", "ed25519"]),
    default="rsa",
    show_default=True,
    help="RSA 2048 bits (every receiver checks it) or Ed25519 (RFC 8463, not every one).",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (default: <selector>.<domain>.key); the public "
    "key goes next to it with .pub.",
)
def dkim_keygen(selector: str, domain: str, algorithm: str, key_file: Path | None) -> None:
    """Write a new DKIM key pair and print the DNS TXT record that publishes it.

    Never overwrites a key: an existing file is an error. Both files are readable by
    their owner only. Set dkim.key_file to the private key once the record is published.
    """
    from digest.message.dkim import dns_record, generate_key, private_pem, public_pem, zone_line

    key_file = key_file or Path(f"{selector}.{domain}.key")
    public_file = key_file.with_name(key_file.name + ".pub")
    for path in (key_file, public_file):
        if path.exists():
            raise DigestError(f"{path} exists already; choose another --key-file")
    key = generate_key(algorithm)
    key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Both files the owner's alone, and never written over (O_EXCL: not even by a file
    # that appeared since the check above).
    for path, pem in ((key_file, private_pem(key)), (public_file, public_pem(key))):
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise DigestError(f"{path} exists already; choose another --key-file") from None
        with open(descriptor, "wb") as fh:
            fh.write(pem)
    click.echo(f"private key: {key_file} (set dkim.key_file to it)")
    click.echo(f"public key:  {public_file}")
    click.echo("DNS TXT record:")
    click.echo(zone_line(selector, domain, dns_record(key)))
