"""Running pods: the kubelet (what should run here), the pod runtime seam and wasmtime behind it.

``interface.PodRuntime`` is the seam; ``native.NativeRuntime`` runs pods with wasmtime in worker
threads, and the browser node puts its own WebAssembly runtime behind the same interface.
"""
