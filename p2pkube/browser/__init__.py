"""The browser node: the shared agent (``p2pkube.node``) with backends of the page.

In a tab, Pyodide runs the same Python as a native node; only what touches the platform is
swapped, each behind the interface the native code uses:

* ``link.py`` — the mesh's links over the page's RTCPeerConnection (``linkbase.LinkBase``);
* ``signaling.py`` — the signaling client's WebSocket (``net.websocket.WebSocket``);
* ``identity.py`` — the node key in WebCrypto, kept in IndexedDB (``net.keys.NodeKey``);
* ``yjs_store.py`` — the state document in the JS ``yjs`` (``state.store.DocumentStore``);
* ``runtime.py`` — pods in Web Workers (``runtime.interface.PodRuntime``);
* ``platform.py`` — no threads (blocking file work runs inline on the in-memory file system)
  and the data directory persisted in IndexedDB;
* ``main.py`` — what the page calls: ``start(token, ws_url)`` and ``snapshot()``.

The JavaScript half (``web/``: the page, ``bridge.js`` registered as the ``p2pjs`` module, the
pod Worker) and its bundle (``build.py`` → ``dist/``) are served by the signaling server.
Nothing here is imported by a native node.
"""
