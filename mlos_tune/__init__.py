"""mlos-tune: the best serving configuration of a model for a workload and a latency budget,
with evidence. A client of the core (it starts cores, registers, drives load): the core never
imports it. Reference: docs/tuning.md; entry point: ``mlos-tune`` / ``python -m mlos_tune``."""
__version__ = "0.1.0"
