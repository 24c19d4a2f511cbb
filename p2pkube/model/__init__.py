"""The domain model: what a cluster's objects are, independent of how they travel or run.

Issue 11 moves the object model here (models and validation, quantities, resources,
selectors, the object service and time helpers) so that ``runtime/``, ``sched/`` and ``cli/``
depend on the model and never on ``api/`` (HTTP only). Modules here import nothing else from
``p2pkube`` and no platform library, so the browser node (Pyodide) loads them as they are.
Today it holds ``timestamps`` (RFC 3339 timestamps).
"""
