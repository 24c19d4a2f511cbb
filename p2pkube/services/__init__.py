"""Services: HTTP requests reaching handler pods from any node (issue 12).

``types`` holds what every part shares (the request, the streamed response, the errors that
become HTTP answers); ``endpoints`` computes each Service's ready endpoints from the replicated
state; ``wire`` is the request rpc between nodes; ``router`` picks an endpoint and carries the
request there. All of it is shared Python that runs in a browser tab too: the HTTP front doors
(NodePort listeners, the proxy path) are platform code in ``p2pkube.api``.
"""
