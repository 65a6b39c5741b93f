"""Create the first superuser (or promote an existing user), from a shell.

    python3 dev.py superuser ada@example.com ada        # asks for the password twice
    python -m backend.modules.user.superuser EMAIL USERNAME --password-stdin < secret.txt

In a cluster: `kubectl exec deploy/backend -c api -- python -m backend.modules.user.superuser
EMAIL USERNAME --password-stdin < secret.txt`. Needs the schema migrated.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from backend.core.config import SettingsError, get_settings
from backend.core.errors import AppError
from backend.db.embedded import release_embedded_database
from backend.db.session import create_engine, create_sessionmaker
from backend.modules.user import service as user_service
from backend.modules.user.models import User
from backend.modules.user.schemas import UserCreate


async def make_superuser(email: str, username: str, password: str | None) -> str:
    """Create the superuser, or promote the user with this email; return what was done."""
    settings = get_settings()
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            existing = await session.scalar(
                select(User).where(User.email == user_service.normalise_email(email))
            )
            if existing is not None:
                existing.is_superuser = True
                return f"{existing.email} ({existing.username}) is now a superuser"
            if password is None:
                raise ValueError("a new user needs a password")
            data = UserCreate(email=email, username=username, password=password)
            user = await user_service.create(session, data=data, is_superuser=True)
            return f"created superuser {user.email} ({user.username})"
    finally:
        await engine.dispose()
        if settings.uses_embedded_db:
            release_embedded_database(settings.embedded_db_dir)


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the passwords differ")
    return first


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="superuser", description=__doc__.splitlines()[0])
    parser.add_argument("email")
    parser.add_argument("username")
    parser.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    args = parser.parse_args(argv)
    try:
        password = read_password(args.password_stdin)
        print(asyncio.run(make_superuser(args.email, args.username, password)))
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        print(f"superuser: {problems}", file=sys.stderr)
        return 1
    except (AppError, SettingsError, ValueError) as exc:
        print(f"superuser: {exc}", file=sys.stderr)
        return 1
    except (OSError, DBAPIError) as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        print(
            f"superuser: {reason}: is the database reachable and migrated "
            f"(`python3 dev.py alembic upgrade head`)?",
            file=sys.stderr,
        )
        return 1
    except (KeyboardInterrupt, EOFError):
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
