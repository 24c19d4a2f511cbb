"""Content-addressed blobs (pod modules) shared peer to peer.

A blob is a file named by its digest (``sha256:<64 hex>``, like an OCI digest). The node that
publishes one stores it under ``<data-dir>/blobs/`` and writes its manifest into the cluster
state as ``objects["Blob//sha256:<hex>"]`` (size, chunk size, the sha256 of every chunk), so
every node can verify what it receives. Each node lists the blobs it holds completely in its
own Node status (``status.images``); a node that needs one (``BlobFetcher.ensure``) pulls its
chunks from those holders over rpc, verifying each chunk and the whole digest.

Modules: ``manifest`` (digests, the Blob object, image references), ``store`` (the store on
disk; in a browser tab, in Emscripten's in-memory file system), ``fetcher`` (the pull;
transport-only, no threads), ``limits`` (the size cap and the free-space reserve every node
applies to what it publishes and pulls), ``gc`` (what to collect), ``service`` (wires them to
the state, rpc and the local API).
"""
