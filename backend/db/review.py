"""Review what autogenerate is about to write: the operations a reviewer must not miss.

Each finding becomes a `# REVIEW: ...` comment in the generated script, right above the
operation, and a line on the console. Autogenerate stays what it is (a first draft); these notes
say where the draft is dangerous: data it drops, rows it cannot migrate, locks it takes.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops

# Comment lines stay inside ruff's line length once indented in `upgrade()`.
_WIDTH = 92


class ReviewNote(ops.MigrateOperation):
    """Not an operation: a comment rendered where the next operation is."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message

    def to_diff_tuple(self) -> tuple[str, str]:
        return ("review", self.message)

    def reverse(self) -> ReviewNote:
        return self


@renderers.dispatch_for(ReviewNote)
def _render_note(autogen_context: AutogenContext, op: ReviewNote) -> list[str]:
    lines = textwrap.wrap(f"REVIEW ({op.kind}): {op.message}", width=_WIDTH)
    return ["# " + lines[0], *("#   " + line for line in lines[1:])]


def _default_hint(column: object) -> str:
    default = getattr(column, "default", None)
    arg = getattr(default, "arg", None)
    if default is None or callable(arg):
        return 'server_default=sa.text("...")'
    if isinstance(arg, bool):
        return f'server_default=sa.text("{str(arg).lower()}")'
    if isinstance(arg, int | float):
        return f'server_default=sa.text("{arg}")'
    return f"server_default={str(arg)!r}"


def _notes_for(op: ops.MigrateOperation, created: set[str]) -> Iterator[ReviewNote]:
    if isinstance(op, ops.AddColumnOp):
        column = op.column
        if not column.nullable and column.server_default is None and column.computed is None:
            has_python_default = column.default is not None
            yield ReviewNote(
                "NOT NULL without a server default",
                f"{op.table_name}.{column.name} is NOT NULL with no server default: this "
                f"upgrade fails if {op.table_name} has rows"
                + (
                    " (the model's `default=` is applied by Python only, not by the database)"
                    if has_python_default
                    else ""
                )
                + f". Add {_default_hint(column)} to the column here and in the model, or add "
                f"it nullable, backfill it, then alter it to nullable=False.",
            )
    elif isinstance(op, ops.DropColumnOp):
        yield ReviewNote(
            "data loss",
            f"drops {op.table_name}.{op.column_name} and every value in it; the downgrade "
            f"brings the column back empty. Old replicas still reading it fail until they are "
            f"replaced: drop it in a release after the code stopped using it.",
        )
    elif isinstance(op, ops.DropTableOp):
        yield ReviewNote(
            "data loss",
            f"drops the table {op.table_name} and all its rows; the downgrade recreates it "
            f"empty. If it belongs to another tool, add its prefix to "
            f"ALEMBIC_IGNORE_TABLE_PREFIXES instead.",
        )
    elif isinstance(op, ops.AlterColumnOp):
        if op.modify_type is not None:
            yield ReviewNote(
                "type change",
                f"changes {op.table_name}.{op.column_name} from {op.existing_type} to "
                f"{op.modify_type}: most type changes rewrite the table under an ACCESS "
                f"EXCLUSIVE lock, and values that do not cast make it fail (add "
                f'postgresql_using="{op.column_name}::<new type>" for an explicit cast).',
            )
        if op.modify_nullable is False:
            yield ReviewNote(
                "SET NOT NULL",
                f"makes {op.table_name}.{op.column_name} NOT NULL: fails if any row holds "
                f"NULL (backfill first), and scans the whole table under an ACCESS EXCLUSIVE lock.",
            )
    elif (
        isinstance(op, ops.CreateIndexOp)
        and op.table_name not in created
        and not op.kw.get("postgresql_concurrently")
    ):
        yield ReviewNote(
            "index without CONCURRENTLY",
            f"CREATE INDEX {op.index_name} blocks every write to {op.table_name} while it "
            f"builds. On a table with many rows build it concurrently, outside the "
            f"revision's transaction: `with op.get_context().autocommit_block(): "
            f"op.create_index(..., postgresql_concurrently=True)`.",
        )


def _rename_notes(table_ops: ops.ModifyTableOps) -> Iterator[tuple[ops.AddColumnOp, ReviewNote]]:
    dropped = [op for op in table_ops.ops if isinstance(op, ops.DropColumnOp)]
    added = [op for op in table_ops.ops if isinstance(op, ops.AddColumnOp)]
    for add in added:
        for drop in dropped:
            yield (
                add,
                ReviewNote(
                    "looks like a rename",
                    f"drops {table_ops.table_name}.{drop.column_name} and adds "
                    f"{add.column.name}: autogenerate cannot see renames. If this is one, replace "
                    f'both with op.alter_column("{table_ops.table_name}", "{drop.column_name}", '
                    f'new_column_name="{add.column.name}") to keep the data.',
                ),
            )


def review(upgrade_ops: ops.UpgradeOps) -> list[ReviewNote]:
    """Insert a `ReviewNote` before each dangerous operation; return the notes, in order."""
    created = {op.table_name for op in upgrade_ops.ops if isinstance(op, ops.CreateTableOp)}
    found: list[ReviewNote] = []

    def annotate(container: list[ops.MigrateOperation], extra: dict[int, list[ReviewNote]]) -> None:
        annotated: list[ops.MigrateOperation] = []
        for op in container:
            notes = [*extra.get(id(op), []), *_notes_for(op, created)]
            annotated.extend(notes)
            found.extend(notes)
            annotated.append(op)
        container[:] = annotated

    for op in upgrade_ops.ops:
        if isinstance(op, ops.ModifyTableOps) and op.table_name not in created:
            renames: dict[int, list[ReviewNote]] = {}
            for add, note in _rename_notes(op):
                renames.setdefault(id(add), []).append(note)
            annotate(op.ops, renames)
    annotate(upgrade_ops.ops, {})
    return found


def order_table_drops(upgrade: ops.UpgradeOps, downgrade: ops.DowngradeOps) -> None:
    """Drop a removed table before the tables it references, and create them back the other way.

    Autogenerate writes removed tables in name order, so a removed module's revision would drop
    `knowledge_bases` before `documents`, whose foreign key still points at it, and fail. A
    dropped table's index drops are left out (they go with it; dropping them first only takes
    more locks); a created table's indexes follow it.
    """
    _reorder(upgrade.ops, ops.DropTableOp, referenced_last=True)
    _reorder(downgrade.ops, ops.CreateTableOp, referenced_last=False)


def _reorder(
    operations: list[ops.MigrateOperation],
    kind: type[ops.DropTableOp] | type[ops.CreateTableOp],
    *,
    referenced_last: bool,
) -> None:
    tables = {op.table_name: op for op in operations if isinstance(op, kind)}
    if not tables:
        return
    refers = {name: _referenced(op) & set(tables) - {name} for name, op in tables.items()}
    ordered: list[str] = []  # referenced first
    while refers:
        ready = sorted(name for name, needs in refers.items() if not needs - set(ordered))
        ordered += ready or sorted(refers)  # a cycle: name order for what is left
        for name in ready or list(refers):
            refers.pop(name)
    if referenced_last:
        ordered.reverse()
    moved = [op for op in operations if getattr(op, "table_name", None) in tables]
    first = next(n for n, op in enumerate(operations) if op in moved)
    grouped: list[ops.MigrateOperation] = []
    for name in ordered:
        own = [op for op in moved if op.table_name == name and not isinstance(op, kind)]  # type: ignore[attr-defined]
        grouped += [tables[name]] if referenced_last else [tables[name], *own]
    rest = [op for op in operations if op not in moved]
    operations[:] = rest[:first] + grouped + rest[first:]


def _referenced(op: ops.DropTableOp | ops.CreateTableOp) -> set[str]:
    """The tables a table's foreign keys point at."""
    return {
        key.target_fullname.rsplit(".", 2)[-2]
        for constraint in op.to_table().foreign_key_constraints
        for key in constraint.elements
    }
