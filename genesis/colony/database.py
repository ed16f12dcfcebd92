"""The colony's database: its schema, where it lives, transactions, the agent rows
(checked as they are read), events and identities.

A colony lives wholly in one database (SQLAlchemy): settings, tokenizer, agents, their
weights and frozen bases as blobs, the shared memory and the events. A folder holds a
SQLite file (`colony.db`, WAL mode); a `postgresql://` URL lets processes on several
machines share one colony. Every read-modify-write is one transaction that holds the
colony's write lock (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-level advisory
lock), so writers take turns and none is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url

from genesis.core.genome import Genome
from genesis.errors import GenesisError
from genesis.train.model import check_size

DATABASE = "colony.db"  # the SQLite file of a folder colony
FORMAT = 2  # 1: weights in files beside the database (see `genesis.colony.upgrade`)
MAX_ID_DRAWS = 16
AGENT_ID = re.compile(r"a[0-9a-f]{8}(?:[0-9a-f]{8})?")  # what `new_identity` makes (8 digits before 63-bit ids)
MAX_BLOCK_SIZE = 4096
WRITE_LOCK = 0x67656E65  # PostgreSQL advisory lock key of a colony's writers ("gene")

schema = sa.MetaData()
settings_table = sa.Table("settings", schema, sa.Column("key", sa.Text, primary_key=True),
                          sa.Column("value", sa.Text, nullable=False))
agents_table = sa.Table(
    "agents", schema,
    sa.Column("id", sa.Text, primary_key=True), sa.Column("parent", sa.Text), sa.Column("genome", sa.Text, nullable=False),
    sa.Column("block_size", sa.Integer, nullable=False), sa.Column("fitness", sa.Float, nullable=False),
    sa.Column("interactions", sa.Integer, nullable=False, server_default="0"),
    sa.Column("total_interactions", sa.Integer, nullable=False, server_default="0"),
    sa.Column("identity_seed", sa.Text, nullable=False), sa.Column("born", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="alive"), sa.Column("retired", sa.Text))
weights_table = sa.Table(  # each agent's current weights (an adapter or a whole model) and their version
    "weights", schema, sa.Column("agent", sa.Text, primary_key=True), sa.Column("base", sa.Text),
    sa.Column("version", sa.Integer, nullable=False), sa.Column("data", sa.LargeBinary, nullable=False))
bases_table = sa.Table("bases", schema, sa.Column("id", sa.Text, primary_key=True),
                 sa.Column("data", sa.LargeBinary, nullable=False))
memories_table = sa.Table(
    "memories", schema, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("prompt", sa.Text, nullable=False), sa.Column("response", sa.Text), sa.Column("continuation", sa.Text),
    sa.Column("score", sa.Float), sa.Column("agents", sa.Text, nullable=False),
    sa.Column("created", sa.Text, nullable=False), sqlite_autoincrement=True)
vectors_table = sa.Table("memory_vectors", schema, sa.Column("memory", sa.Integer, primary_key=True),
                          sa.Column("vector", sa.LargeBinary, nullable=False))
scores_table = sa.Table(  # each agent's mean log-likelihood of a memory's continuation (colonies with niches)
    "memory_scores", schema, sa.Column("memory", sa.Integer, primary_key=True),
    sa.Column("agent", sa.Text, primary_key=True), sa.Column("log_likelihood", sa.Float, nullable=False))
events_table = sa.Table(
    "events", schema, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.Text, nullable=False), sa.Column("agent", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False), sa.Column("created", sa.Text, nullable=False),
    sqlite_autoincrement=True)
AGENT_COLUMNS = [agents_table.c[name] for name in ("id", "parent", "genome", "block_size", "fitness", "interactions",
                                             "total_interactions", "identity_seed", "born", "status")]


@dataclass(frozen=True)
class Agent:
    """One row of the agents table."""

    id: str
    parent: str | None
    genome: Genome
    block_size: int
    fitness: float
    interactions: int
    total_interactions: int
    identity_seed: int
    born: str
    status: str


def agent_from_row(row: Sequence[Any], vocab_size: int, where: str) -> Agent:
    """An agents row (`AGENT_COLUMNS`), checked: a colony may come from someone else, so
    nothing in it may ask for an unbounded model.

    Raises:
        GenesisError: naming the colony `where` and the agent.
    """
    agent_id = row[0]
    try:
        if not isinstance(agent_id, str) or not AGENT_ID.fullmatch(agent_id):
            raise GenesisError(f"its id {agent_id!r} is not an agent id")
        genome = Genome.from_json(row[2])
        if not isinstance(row[3], int) or not 1 <= row[3] <= MAX_BLOCK_SIZE:
            raise GenesisError(f"its block size {row[3]!r} is not in 1..{MAX_BLOCK_SIZE}")
        check_size(genome, vocab_size, row[3], "its genome")
        return Agent(agent_id, row[1], genome, row[3], float(row[4]), int(row[5]), int(row[6]), int(row[7]),
                     row[8], row[9])
    except (GenesisError, TypeError, ValueError) as error:
        raise GenesisError(f"{where}: agent {agent_id!r} is invalid: {error}") from None


def now() -> str:
    """The current UTC time as an ISO string (milliseconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def is_url(location: str | Path) -> bool:
    """Whether a colony location is a database URL rather than a folder."""
    return isinstance(location, str) and "://" in location


class Store:
    """Where a colony lives: a folder (SQLite in it) or a database URL."""

    def __init__(self, location: str | Path):
        self.folder = None if is_url(location) else Path(location)
        url = f"sqlite:///{self.folder / DATABASE}" if self.folder is not None else str(location)
        try:
            parsed = make_url(url)
        except sa.exc.ArgumentError:
            raise GenesisError(f"{location} is not a database URL") from None
        if parsed.drivername in ("postgresql", "postgres"):  # psycopg 3, not the default psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.name = str(self.folder) if self.folder is not None else parsed.render_as_string(hide_password=True)
        self.sqlite = parsed.get_backend_name() == "sqlite"
        try:
            self.engine = sa.create_engine(parsed, **({"connect_args": {"timeout": 60}} if self.sqlite else {}))
        except (sa.exc.ArgumentError, ImportError) as error:
            raise GenesisError(f"{self.name}: {error}") from None
        if self.sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_connect)
            sa.event.listen(self.engine, "begin", _sqlite_begin)

    def exists(self) -> bool:
        """Whether a colony lives here (without creating anything)."""
        if self.folder is not None and not (self.folder / DATABASE).is_file():
            return False
        try:  # tables without settings are what a failed seeding leaves: no colony
            with self.engine.connect() as db:
                return sa.inspect(db).has_table("settings") and db.execute(
                    sa.select(sa.func.count()).select_from(settings_table)).scalar_one() > 0
        except sa.exc.SQLAlchemyError as error:
            raise GenesisError(f"{self.name}: cannot reach the database: {_first_line(error)}") from None

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading (it sees what was committed)."""
        with self._errors(), self.engine.connect() as db:
            yield db

    @contextlib.contextmanager
    def reading(self, db: Connection | None) -> Iterator[Connection]:
        """`db`, a transaction already open, or without one a connection for reading."""
        if db is not None:
            yield db
        else:
            with self.read() as reader:
                yield reader

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction under the colony's write lock: committed at the end of the
        `with` block, rolled back if it raises."""
        with self._errors(), self.engine.connect().execution_options(write=True) as db, db.begin():
            if not self.sqlite:
                db.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})
            yield db

    @contextlib.contextmanager
    def create_or_discard(self) -> Iterator[Connection]:
        """The tables (a folder is made first), then a write transaction to fill them in.
        A failure inside it leaves nothing behind: the transaction rolls back, and a
        database file (and folder) this call made is removed again."""
        made = [] if self.folder is None else [p for p in (self.folder, self.folder / DATABASE) if not p.exists()]
        try:
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
            with self._errors():
                schema.create_all(self.engine)
            with self.write() as db:
                yield db
        except BaseException:
            self.engine.dispose()
            for path in reversed(made):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                        leftover.unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.OperationalError as error:  # unreachable server, locked too long, disk full
            raise GenesisError(f"{self.name}: {_first_line(error)}") from None


def _sqlite_connect(connection, _record) -> None:
    connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
    connection.execute("PRAGMA busy_timeout = 60000")
    connection.execute("PRAGMA journal_mode=WAL")  # readers and a writer at once; kept in the file
    connection.execute("PRAGMA journal_size_limit = 33554432")  # the WAL shrinks back to 32 MiB after checkpoints


def _sqlite_begin(db: Connection) -> None:
    # Writers take SQLite's write lock at BEGIN, so two read-modify-writes never interleave.
    db.exec_driver_sql("BEGIN IMMEDIATE" if db.get_execution_options().get("write") else "BEGIN")


def _first_line(error: Exception) -> str:
    return str(getattr(error, "orig", None) or error).strip().splitlines()[0]


def read_settings(db: Connection) -> dict[str, str]:
    """The settings table as a dict."""
    return dict(db.execute(sa.select(settings_table.c.key, settings_table.c.value)).all())


def insert_agent(db: Connection, agent_id: str, parent: str | None, genome: Genome, block_size: int,
                 fitness: float, identity_seed: int) -> None:
    """A newborn agent's row (its weights are written beside it, in the same transaction)."""
    db.execute(agents_table.insert().values(id=agent_id, parent=parent, genome=genome.to_json(), block_size=block_size,
                                      fitness=fitness, identity_seed=str(identity_seed), born=now()))


def new_identity(db: Connection) -> tuple[str, int]:
    """A new agent's id and identity seed: 63 bits from the OS entropy pool, recorded with
    the agent so the noise of a division can be replayed from the database. The id is all
    of them (16 hex digits), drawn again on the (astronomically rare) clash with an
    agent of the colony."""
    for _ in range(MAX_ID_DRAWS):
        identity = int.from_bytes(os.urandom(8), "big") >> 1
        agent_id = f"a{identity:016x}"
        if db.execute(sa.select(agents_table.c.id).where(agents_table.c.id == agent_id)).first() is None:
            return agent_id, identity
    raise GenesisError(f"no free agent id after {MAX_ID_DRAWS} draws")


def recent_events(db: Connection, limit: int) -> list[dict[str, Any]]:
    """The `limit` most recent events, the latest first."""
    rows = db.execute(sa.select(events_table.c.kind, events_table.c.agent, events_table.c.detail, events_table.c.created)
                      .order_by(events_table.c.id.desc()).limit(limit)).all()
    return [{"kind": k, "agent": a, "detail": json.loads(d), "created": c} for k, a, d, c in rows]


def recently_retired(db: Connection, limit: int) -> list[str]:
    """The ids of the `limit` agents retired last, the latest first."""
    return db.execute(sa.select(agents_table.c.id).where(agents_table.c.status == "retired")
                      .order_by(agents_table.c.retired.desc(), agents_table.c.id.desc()).limit(limit)).scalars().all()


def retired_count(db: Connection) -> int:
    """How many agents ever retired."""
    return db.execute(sa.select(sa.func.count()).select_from(agents_table)
                      .where(agents_table.c.status == "retired")).scalar_one()


def forget_retired_weights(db: Connection, keep: int) -> None:
    """Drop the weights of retired agents but the `keep` retired last (kept to export or
    inspect), so a long-lived colony's database stops growing with its dead."""
    retired = sa.select(agents_table.c.id).where(agents_table.c.status == "retired")
    db.execute(weights_table.delete().where(weights_table.c.agent.in_(retired),
                                            weights_table.c.agent.not_in(recently_retired(db, keep))))


def event(db: Connection, kind: str, agent: str, detail: dict[str, Any]) -> None:
    """Record an event (birth, division, retirement) of an agent."""
    db.execute(events_table.insert().values(kind=kind, agent=agent, detail=json.dumps(detail), created=now()))


def iter_lineage(agents: Sequence[Agent]) -> Iterator[tuple[int, Agent]]:
    """(depth, agent) pairs in lineage-tree order: each parent followed by its children."""
    children: dict[str | None, list[Agent]] = {}
    ids = {a.id for a in agents}
    for agent in agents:
        children.setdefault(agent.parent if agent.parent in ids else None, []).append(agent)

    def walk(parent: str | None, depth: int) -> Iterator[tuple[int, Agent]]:
        for agent in sorted(children.get(parent, []), key=lambda a: a.born):
            yield depth, agent
            yield from walk(agent.id, depth + 1)

    yield from walk(None, 0)
