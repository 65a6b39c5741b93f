from __future__ import annotations

from fastapi import status

from backend.core.errors import AppError, Conflict, NotFound, TooManyRequests


class EmailTaken(Conflict):
    detail = "A user with this email already exists"


class UsernameTaken(Conflict):
    detail = "A user with this username already exists"


class InvalidCredentials(AppError):
    status_code = status.HTTP_401_UNAUTHORIZED
    detail = "Incorrect username or password"


class NotAuthenticated(AppError):
    status_code = status.HTTP_401_UNAUTHORIZED
    detail = "Not authenticated: send a valid bearer token"


class InactiveUser(AppError):
    status_code = status.HTTP_403_FORBIDDEN
    detail = "This account is disabled"


class NotSuperuser(AppError):
    status_code = status.HTTP_403_FORBIDDEN
    detail = "Superuser rights required"


class WrongPassword(AppError):
    status_code = status.HTTP_400_BAD_REQUEST
    detail = "The current password is incorrect"


class UserNotFound(NotFound):
    detail = "User not found"


class TooManyAttempts(TooManyRequests):
    detail = "Too many failed logins: try again later"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many failed logins: try again in {retry_after} seconds", retry_after=retry_after
        )
