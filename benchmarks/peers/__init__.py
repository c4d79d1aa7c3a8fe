"""Peer servers of the Open Inference Protocol benchmark, each run from its own virtualenv (their
pins conflict with the project's: nvidia-pytriton wants numpy < 2) by a launcher that prints
``serving on http://127.0.0.1:<port>`` once the model answers, as mlos-core does."""
