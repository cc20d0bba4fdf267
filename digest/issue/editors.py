"""Editor accounts: argon2 password hashes, and checking a login.

The web app's editors' area (``/admin``) and the ``digest editors`` commands use these;
passwords themselves are never stored or logged.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from digest.core.addresses import checked_address
from digest.core.errors import AddressError, EditorialError
from digest.store import Store
from digest.store.editorial import EDITOR, ROLES, Editor

__all__ = ["MIN_PASSWORD", "add_editor", "check_login", "hash_password", "set_role"]

#: Shortest password accepted for an editor.
MIN_PASSWORD = 10
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_hasher = PasswordHasher()
# Verified against when the name is unknown, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash("no editor has this password")


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` with argon2-cffi's recommended parameters."""
    return _hasher.hash(password)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise EditorialError(f"bad role {role!r}: use {' or '.join(ROLES)}")


def add_editor(
    store: Store,
    name: str,
    email: str,
    password: str,
    *,
    role: str = EDITOR,
    now: datetime | None = None,
) -> Editor:
    """A new account; EditorialError for a bad name, address, password or role.

    An 'editor' edits and approves issues; an 'admin' also sees readers' personal data
    and handles their requests.
    """
    _check_role(role)
    if not _NAME.fullmatch(name):
        raise EditorialError(
            f"bad editor name {name!r}: use up to 64 letters, digits, '.', '_' or '-'"
        )
    try:
        address = checked_address(email, smtputf8=False)
    except AddressError as exc:
        raise EditorialError(f"bad email address for editor {name!r}: {exc}") from None
    if len(password) < MIN_PASSWORD:
        raise EditorialError(f"the password must have at least {MIN_PASSWORD} characters")
    return store.add_editor(
        name, address, hash_password(password), now or datetime.now(UTC), role=role
    )


def set_role(store: Store, name: str, role: str) -> None:
    """Give the account ``name`` the role ``role``; EditorialError for a bad role or name."""
    _check_role(role)
    if not store.set_editor_role(name, role):
        raise EditorialError(f"no editor named {name!r}")


def check_login(store: Store, name: str, password: str) -> Editor | None:
    """The editor if ``password`` is theirs, else None (same work for an unknown name)."""
    editor = store.editor_by_name(name)
    try:
        _hasher.verify(editor.password_hash if editor else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if editor is None:
        return None
    if _hasher.check_needs_rehash(editor.password_hash):
        store.set_password_hash(editor.id, hash_password(password))
    return editor
