from .ids import split_id, validate_model_id
from .registry import ModelEntry, RegisterSpec, Registry, State, validate_options

__all__ = ["ModelEntry", "RegisterSpec", "Registry", "State", "split_id", "validate_model_id", "validate_options"]
