"""The published schema says what the API really answers.

FastAPI documents a route's own `responses` and a 422 shaped `{"detail": [...]}`. This adds the
errors each route's dependencies declare (`@raises(...)`: 401 wherever a token is needed, 404
wherever an owned resource is loaded), the body guards' 408 and 413 on routes with a body, and
publishes the 422 shape the handler really sends: `{"detail": "...", "code": "validation_error",
"errors": [...]}`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, routing, status
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from backend.core.errors import AppError, ErrorBody

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
BODY_ERRORS = {
    status.HTTP_400_BAD_REQUEST: "The body cannot be parsed (not JSON, not UTF-8)",
    status.HTTP_408_REQUEST_TIMEOUT: "The request body stalled (REQUEST_BODY_IDLE_TIMEOUT)",
    status.HTTP_413_CONTENT_TOO_LARGE: "The request body is too large",
}
VALIDATION_ERROR = {
    "title": "HTTPValidationError",
    "type": "object",
    "required": ["detail", "code", "errors"],
    "properties": {
        "detail": {"type": "string", "title": "Detail", "description": "The problems, in one line"},
        "code": {"type": "string", "title": "Code", "enum": ["validation_error"]},
        "errors": {
            "type": "array",
            "title": "Errors",
            "items": {"$ref": "#/components/schemas/ValidationError"},
        },
    },
}


def _declared(dependant: Dependant) -> list[type[AppError]]:
    found: list[type[AppError]] = list(getattr(dependant.call, "declared_errors", ()))
    for sub in dependant.dependencies:
        found += _declared(sub)
    return found


def _error_entry(descriptions: list[str]) -> dict[str, Any]:
    return {
        "description": "; ".join(dict.fromkeys(descriptions)),
        "content": {"application/json": {"schema": ERROR_REF}},
    }


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorBody", ErrorBody.model_json_schema())
        if "HTTPValidationError" in components:
            components["HTTPValidationError"] = VALIDATION_ERROR
        for context in routing.iter_route_contexts(app.routes):
            route = context.original_route
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            extra: dict[int, list[str]] = {}
            for error in _declared(route.dependant):
                extra.setdefault(error.status_code, []).append(error.detail)
            has_body = route.body_field is not None or "requestBody" in (route.openapi_extra or {})
            if has_body:
                for code, description in BODY_ERRORS.items():
                    extra.setdefault(code, []).append(description)
            for method in context.methods or ():
                operation = schema["paths"][context.path_format].get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                for code, descriptions in extra.items():
                    responses.setdefault(str(code), _error_entry(descriptions))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
