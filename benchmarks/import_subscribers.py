"""Import N synthetic subscribers from CSV into a fresh store and print rows per second.

Runs the import into an empty list (every row new), then the same file again (every
row unchanged; --repeat times), as `digest subscribers import` does. On PostgreSQL the
store lives in a schema of its own, created for the run and dropped after it.

    .venv/bin/python benchmarks/import_subscribers.py --rows 100000
    .venv/bin/python benchmarks/import_subscribers.py --rows 100000 \
        --store-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from digest.audience.subscribers import import_csv
from digest.store import Store

CATEGORIES = ["politik", "verwaltung", "smart-city", "sicherheit", "infrastruktur"]
REGIONS = ["Bayern", "Hessen", "Sachsen", "Hamburg"]


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name,categories,regions,locale\n")
        for n in range(rows):
            categories = "|".join(CATEGORIES[: 1 + n % len(CATEGORIES)])
            regions = "|".join(REGIONS[: n % 3])
            out.write(f"leser{n}@example.org,Leserin {n},{categories},{regions},de_DE\n")


@contextmanager
def own_schema(url: str) -> Iterator[str]:
    """``url`` itself for SQLite; for PostgreSQL, the URL of a new schema dropped after."""
    if not url.startswith("postgresql"):
        yield url
        return
    schema = f"digest_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def run(rows: int, store_url: str | None, repeat: int) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        own_schema(store_url or f"sqlite:///{tmp}/bench.db") as url,
    ):
        path = Path(tmp) / "subscribers.csv"
        write_csv(path, rows)
        store = Store.open(url, secret_key="benchmark-secret-key-0123456789")
        try:
            for label in ["new"] + ["again"] * repeat:
                started = time.perf_counter()
                report = import_csv(
                    store, path, "allgemein", categories=CATEGORIES, regions=REGIONS,
                    consent="Benchmark: synthetic readers",
                )  # fmt: skip
                elapsed = time.perf_counter() - started
                print(
                    f"{label:6} {rows} rows in {elapsed:.1f} s: {rows / elapsed:,.0f} rows/s "
                    f"({report.imported} imported, {report.unchanged} unchanged, "
                    f"{len(report.errors)} skipped)"
                )
        finally:
            store.close()
    print(f"store:  {url.split('://')[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--store-url", help="database URL (default: a temporary SQLite file)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="how many times the unchanged file is imported again"
    )
    args = parser.parse_args()
    run(args.rows, args.store_url, args.repeat)


if __name__ == "__main__":
    main()
