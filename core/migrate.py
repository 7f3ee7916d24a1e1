"""``python -m core.migrate``: bring the database named by DATABASE_URL to the latest schema."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from core.settings import ROOT, Settings, load_settings


def alembic_config() -> Config:
    return Config(str(ROOT / "alembic.ini"))


def upgrade(settings: Settings | None = None) -> None:
    settings = settings or load_settings()
    from core.db import make_engine

    engine = make_engine(settings)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    engine.dispose()


if __name__ == "__main__":
    upgrade()
    print("database is at the latest schema")
