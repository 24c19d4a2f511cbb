"""What a container's ``image`` may be, said once for the API's check and the CLI's messages.

Apart from :mod:`p2pkube.model.fields` (pydantic) so that the CLI, which names these forms in
its errors, loads no pydantic: importing it cost every ``p2pkube`` command ~85 ms.
"""

from __future__ import annotations

import re

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
"""A module's content address: what the API stores in ``image``."""
IMAGE_SOURCES = (
    "a .wasm path, an http(s) URL of a .wasm file, or an OCI reference to a WebAssembly "
    "artifact (REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:<hex>)"
)
"""What ``p2pkube apply -f`` publishes for a container's ``image`` (storing the digest)."""
IMAGE_FORMS = f"a module digest (sha256:<64 hex digits>), {IMAGE_SOURCES}"
"""Every form a container's ``image`` may take in a manifest given to ``p2pkube apply -f``."""
