"""The bundled validator: a model matrix through install, register and inference, in kernel and
userspace mode, recorded as metrics JSON and rendered as an HTML report."""
__version__ = "0.1.0"
