"""The error every invalid object raises, importable without pydantic."""

from __future__ import annotations


class ValidationFailed(ValueError):
    """An object that cannot be stored; ``errors`` has one ``path: reason`` per problem.

    Apart from the models (``model.schema``) so that raising or catching it does not import
    pydantic (the agent loads the models only when it first validates a write)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class ObjectRefused(Exception):
    """A write the model refuses whatever the object says, with Kubernetes' HTTP ``code``
    (404 NotFound: its namespace does not exist; 403 Forbidden: ``default`` may not be
    deleted, a terminating namespace takes no new objects) and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
