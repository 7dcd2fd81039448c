"""``clipdfer demo``: a local web page to drop videos into and see every face's timeline (Gradio; see docs/demo.md).
The options and the server are :mod:`clipdfer.app.serve`'s, shared with ``python -m clipdfer.app``."""

from ..app.serve import HELP, add_arguments, run

__all__ = ["HELP", "add_arguments", "run"]
