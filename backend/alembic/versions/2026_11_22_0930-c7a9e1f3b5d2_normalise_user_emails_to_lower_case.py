"""normalise user emails to lower case

Emails become case-insensitive keys: `Bob@Example.com` and `bob@example.com` are one account.
What each user typed is kept in `email_as_registered`, so the downgrade restores it exactly.

Revision ID: c7a9e1f3b5d2
Revises: b6f2d8e4a913
Create Date: 2026-11-22 09:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c7a9e1f3b5d2"
down_revision: str | Sequence[str] | None = "b6f2d8e4a913"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # In SQL, so `upgrade --sql` output refuses the same way. Merging accounts is a decision for
    # people, not for a migration.
    op.execute(
        """
        DO $$
        DECLARE clashes text;
        BEGIN
            SELECT string_agg(address, ', ') INTO clashes FROM (
                SELECT lower(email) AS address FROM users
                GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 10
            ) AS duplicated;
            IF clashes IS NOT NULL THEN
                RAISE EXCEPTION 'cannot lower-case emails: several accounts share an address '
                    'apart from case (%); merge or rename them first', clashes;
            END IF;
        END $$
        """
    )
    op.add_column("users", sa.Column("email_as_registered", sa.String(length=320), nullable=True))
    op.execute("UPDATE users SET email_as_registered = email, email = lower(email)")


def downgrade() -> None:
    op.execute("UPDATE users SET email = email_as_registered WHERE email_as_registered IS NOT NULL")
    op.drop_column("users", "email_as_registered")
