"""The Kubernetes API face of the agent: kubectl and client libraries talk to any native node as
to an API server. It is a face over the same object service and watch hub as the local API
(``p2pkube.api.server``), never a second copy of them (docs/kubectl.md)."""
