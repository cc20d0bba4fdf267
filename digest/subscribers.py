"""Import subscribers from CSV into the store.

Columns (header row required): ``email`` (required), ``name``, ``categories`` and
``regions`` (values separated by ``|``; empty means everything), ``locale``. A bad row is
reported with its line number and skipped; the good rows are imported.
"""

from __future__ import annotations

import csv
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from babel import Locale, UnknownLocaleError
from email_validator import EmailNotValidError, validate_email

from digest.errors import DigestError, ImportRowError
from digest.models import Subscriber
from digest.store import Store

__all__ = ["COLUMNS", "ImportReport", "import_csv", "parse_rows"]

COLUMNS = ("email", "name", "categories", "regions", "locale")


@dataclass
class ImportReport:
    """What an import did: counts and one error per rejected row."""

    path: str
    list_name: str
    added: int = 0
    updated: int = 0
    errors: list[ImportRowError] = field(default_factory=list)


def _split(value: str | None) -> frozenset[str]:
    return frozenset(v.strip() for v in (value or "").split("|") if v.strip())


def parse_rows(
    path: Path, list_name: str, *, categories: Collection[str], regions: Collection[str]
) -> tuple[list[tuple[int, Subscriber]], list[ImportRowError]]:
    """Read and validate every row; returns the good subscribers and the row errors."""
    good: list[tuple[int, Subscriber]] = []
    errors: list[ImportRowError] = []
    region_names = {r.casefold(): r for r in regions}
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DigestError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        try:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            if "email" not in header:
                raise DigestError(
                    f"{path}: line 1: the header has no 'email' column "
                    f"(columns: {', '.join(COLUMNS)})"
                )
            unknown = [c for c in header if c not in COLUMNS]
            if unknown:
                raise DigestError(
                    f"{path}: line 1: unknown column {unknown[0]!r} (columns: {', '.join(COLUMNS)})"
                )
            seen: set[str] = set()
            for row in reader:
                line = reader.line_num
                try:
                    if None in row:
                        raise ImportRowError(line, "more fields than columns")
                    good.append((line, _subscriber(row, line, list_name, categories, region_names)))
                    email = good[-1][1].email
                    if email in seen:
                        good.pop()
                        raise ImportRowError(line, f"{email} appears twice in this file")
                    seen.add(email)
                except ImportRowError as exc:
                    errors.append(exc)
        except UnicodeDecodeError:
            raise DigestError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
        except csv.Error as exc:
            raise DigestError(f"{path}: line {reader.line_num}: {exc}") from None
    return good, errors


def _subscriber(
    row: dict[str, str],
    line: int,
    list_name: str,
    categories: Collection[str],
    regions: dict[str, str],
) -> Subscriber:
    raw = (row.get("email") or "").strip()
    if not raw:
        raise ImportRowError(line, "the email column is empty")
    try:
        email = validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ImportRowError(line, f"{raw!r} is not a valid email address: {exc}") from None
    chosen = _split(row.get("categories"))
    bad = sorted(chosen - set(categories))
    if bad:
        raise ImportRowError(
            line, f"unknown category {bad[0]!r} (known: {', '.join(sorted(categories))})"
        )
    chosen_regions = set()
    for region in _split(row.get("regions")):
        if region.casefold() not in regions:
            raise ImportRowError(line, f"unknown region {region!r}")
        chosen_regions.add(regions[region.casefold()])
    locale = (row.get("locale") or "").strip() or None
    if locale:
        try:
            Locale.parse(locale)
        except (UnknownLocaleError, ValueError):
            raise ImportRowError(line, f"unknown locale {locale!r}") from None
    name = " ".join((row.get("name") or "").split())
    return Subscriber(
        email=email,
        name=name,
        lists=frozenset({list_name}),
        categories=chosen,
        regions=frozenset(chosen_regions),
        locale=locale,
    )


def import_csv(
    store: Store,
    path: Path,
    list_name: str,
    *,
    categories: Collection[str],
    regions: Collection[str],
) -> ImportReport:
    """Import the good rows of ``path`` into ``list_name``; re-importing updates in place.

    The good rows go in as one transaction: all of them or, if the store fails, none.
    """
    report = ImportReport(str(path), list_name)
    good, report.errors = parse_rows(path, list_name, categories=categories, regions=regions)
    report.added, report.updated = store.save_subscribers(
        (subscriber for _line, subscriber in good), [list_name]
    )
    return report
