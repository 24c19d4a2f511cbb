"""The domain model: what a cluster's objects are, independent of how they travel or run.

The object model lives here (models and validation in ``schema``, quantities, resources,
names, selectors, the object service in ``objects``, watches in ``watch``, time helpers in
``timestamps``) so that ``runtime/``, ``sched/`` and ``cli/`` depend on the model and never on
``api/`` (HTTP only). Only ``schema`` loads a platform library (pydantic): the native agent
injects its ``validate_object`` into the object service, so the browser node (Pyodide), which
ships no pydantic, loads every other module as it is. ``objects`` reads and writes through the
replicated state (``p2pkube.state``); nothing here imports another implementation package.
"""
