"""kernel_shim: the cffi binding to ``/dev/mlos-ml`` and its userspace twin (not written yet)."""
