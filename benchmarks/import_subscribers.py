"""Import N synthetic subscribers from CSV into a fresh store and print rows per second.

Runs the import twice: into an empty list (every row new), then the same file again
(every row unchanged), as `digest subscribers import` does.

    .venv/bin/python benchmarks/import_subscribers.py --rows 100000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from digest.store import Store
from digest.subscribers import import_csv

CATEGORIES = ["politik", "verwaltung", "smart-city", "sicherheit", "infrastruktur"]
REGIONS = ["Bayern", "Hessen", "Sachsen", "Hamburg"]


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name,categories,regions,locale\n")
        for n in range(rows):
            categories = "|".join(CATEGORIES[: 1 + n % len(CATEGORIES)])
            regions = "|".join(REGIONS[: n % 3])
            out.write(f"leser{n}@example.org,Leserin {n},{categories},{regions},de_DE\n")


def run(rows: int, store_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = store_url or f"sqlite:///{tmp}/bench.db"
        path = Path(tmp) / "subscribers.csv"
        write_csv(path, rows)
        store = Store.open(url, secret_key="benchmark-secret-key-0123456789")
        try:
            for label in ("new", "again"):
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
    args = parser.parse_args()
    run(args.rows, args.store_url)


if __name__ == "__main__":
    main()
