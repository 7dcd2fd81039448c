"""Reading and converting checkpoints of other code bases (safely: nothing in a file is executed)."""

from ..models._safe_load import InertObject, UnsafeCheckpointError, load_inert

__all__ = ["InertObject", "UnsafeCheckpointError", "load_inert"]
