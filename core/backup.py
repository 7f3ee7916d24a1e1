"""Backing up and restoring the SQLite default: ``python -m core.backup dump FILE`` / ``restore FILE``.

Everything the service keeps is in its database (jobs, history, logs, uploaded datasets, trained models in
chunks), so a copy of the database is the whole backup. A live SQLite database (in WAL mode, written by the
API and the worker) is not copied with ``cp``: a copy taken mid-write can be torn, and the newest
transactions may sit in the ``-wal`` file. SQLite's online backup API copies a consistent snapshot while
both keep running. PostgreSQL has its own tools: ``pg_dump -Fc`` and ``pg_restore`` (README, "Backups").
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from core.settings import load_settings

PAGES_PER_STEP = 1024  # the copy yields between steps, so writers wait milliseconds, not for the whole copy


def sqlite_path(database_url: str) -> Path:
    if not database_url.startswith("sqlite:///"):
        raise SystemExit(
            f"{database_url.split(':', 1)[0]} is not SQLite: back up PostgreSQL with pg_dump -Fc "
            "and restore with pg_restore (README, 'Backups')"
        )
    return Path(database_url.removeprefix("sqlite:///"))


def copy(source: Path, target: Path) -> int:
    """A consistent copy of the database ``source`` into ``target`` (replaced), by the online backup API;
    returns the copy's size in bytes."""
    if not source.exists():
        raise SystemExit(f"no database at {source}")
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst, pages=PAGES_PER_STEP)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    finally:
        dst.close()
        src.close()
    return target.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.backup", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["dump", "restore"])
    parser.add_argument("file", type=Path, help="the backup file to write (dump) or to read (restore)")
    args = parser.parse_args(argv)
    database = sqlite_path(load_settings().database_url)
    if args.action == "dump":
        size = copy(database, args.file)
        print(f"backed up {database} to {args.file} ({size:,} bytes)")
    else:  # the API and the worker must be stopped: a restore replaces the database under them
        for stale in (Path(f"{database}-wal"), Path(f"{database}-shm")):
            stale.unlink(missing_ok=True)
        size = copy(args.file, database)
        print(f"restored {args.file} into {database} ({size:,} bytes); run python -m core.migrate, then start the service")
    return 0


if __name__ == "__main__":
    sys.exit(main())
