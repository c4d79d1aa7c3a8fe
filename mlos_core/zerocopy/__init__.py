"""The local zero-copy inference path: tensors in shared buffers (kernel_shim), requests
through the priority queue of ``/dev/mlos-ml`` or its userspace twin."""
