"""The error every invalid object raises, importable without pydantic."""

from __future__ import annotations


class ValidationFailed(ValueError):
    """An object that cannot be stored; ``errors`` has one ``path: reason`` per problem.

    Apart from the models (``model.schema``) so that raising or catching it does not import
    pydantic (the agent loads the models only when it first validates a write)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
