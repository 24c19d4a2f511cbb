"""The cluster dashboard's server side: what the page needs beyond the object watches.

The page (``p2pkube/browser/web/dashboard/``, served by the native agent at ``/dashboard/``
and shown as the Cluster tab of a browser node's page) gets objects from watches; this
package gives it the rest, in one small answer it polls every ``dashboard.poll_interval``:
the mesh as a graph (members, links with their round trips), the workloads' leases and the
Services' request counters (:mod:`p2pkube.dashboard.meshview`). docs/dashboard.md has the
whole picture."""
