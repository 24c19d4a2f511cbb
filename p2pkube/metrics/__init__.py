"""Prometheus metrics of a native agent (``p2pkube join --metrics-address``; docs/metrics.md).

``settings.py`` holds the section's settings and is imported by every node (it loads nothing);
``exporter.py`` (prometheus_client: the registry, its collectors, the event-loop lag task) and
``server.py`` (the aiohttp listener) are imported by the native agent only. The shared node
reports the events metrics time through :class:`p2pkube.observe.Observer`, which loads nothing
either.
"""
