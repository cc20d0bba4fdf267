"""Import N synthetic subscribers with `digest subscribers import`: rows per second, peak memory.

Each import is its own `digest subscribers import` process on the bundled config.toml
(copied to a temporary folder), into an empty list (every row new), then the same file
again (every row unchanged; --repeat times). Printed per run: the wall time of the
process (its start included), rows per second, the CPU time of the process (a fairer
figure on a busy machine) and its peak resident memory (ru_maxrss). The store is
migrated before the first run. On PostgreSQL the store lives in a schema of its own,
created for the run and dropped after it.

    .venv/bin/python benchmarks/import_subscribers.py --rows 100000
    .venv/bin/python benchmarks/import_subscribers.py --rows 1000000
    .venv/bin/python benchmarks/import_subscribers.py --rows 100000 \
        --store-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from digest.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _schema import own_schema  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "benchmark-secret-key-0123456789"
# The categories and regions of the bundled config.toml's newsletter.
CATEGORIES = ["politik", "verwaltung", "smart-city", "sicherheit", "infrastruktur"]
REGIONS = ["Bayern", "Hessen", "Sachsen", "Hamburg"]


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name,categories,regions,locale\n")
        for n in range(rows):
            categories = "|".join(CATEGORIES[: 1 + n % len(CATEGORIES)])
            regions = "|".join(REGIONS[: n % 3])
            out.write(f"leser{n}@example.org,Leserin {n},{categories},{regions},de_DE\n")


def import_once(folder: Path, csv: Path, url: str) -> tuple[float, float, int, str]:
    """Run one `digest subscribers import`: wall time, CPU time, peak RSS in KiB, output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(DIGEST_STORE_URL=url, DIGEST_SECRET_KEY=SECRET_KEY)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "digest.cli", "subscribers", "import", str(csv)]
    command += ["--list", "allgemein", "--consent", "Benchmark: synthetic readers"]
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=output, stderr=output)
        _pid, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        said = output.read().decode(errors="replace").strip()
    if process.returncode != 0:
        raise SystemExit(f"digest subscribers import failed ({process.returncode}):\n{said}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, said


def run(rows: int, store_url: str | None, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(ROOT / "config.toml", folder / "config.toml")
        with own_schema(store_url or f"sqlite:///{folder}/bench.db") as url:
            csv = folder / "subscribers.csv"
            write_csv(csv, rows)
            Store.open(url, secret_key=SECRET_KEY).close()  # migrated before the clock runs
            for label in ["new"] + ["again"] * repeat:
                elapsed, cpu, peak_kib, said = import_once(folder, csv, url)
                counts = said.splitlines()[-1].partition(": ")[2]
                print(
                    f"{label:6} {rows} rows in {elapsed:.1f} s: {rows / elapsed:,.0f} rows/s "
                    f"({cpu:.1f} s CPU), peak RSS {peak_kib / 1024:,.0f} MiB ({counts})",
                    flush=True,
                )
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
