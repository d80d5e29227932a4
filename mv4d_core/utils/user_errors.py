"""Which exceptions are a user's error, and their one-line message (for every ``mv4d`` command).

Errors are matched by class name and defining package (no imports: this sits in the bottom layer
and the ``mv4d`` entry point stays fast). Their messages name the cause and, where the raising code
does not, a fix is added here (checkpoints).
"""

from __future__ import annotations

#: Error classes (by name, defined in mv4d_core) whose message is meant for the user.
USER_ERRORS = frozenset({"BagError", "TopicMapError", "ConfigError", "EngineError", "RigError", "FrameError",
                         "MessageError", "ExportError", "Av2Error", "NuScenesError", "DemoError"})
#: OS errors about a path the user gave.
_PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def user_error_message(e: BaseException) -> str | None:
    """The one-line message for a user error, or None when ``e`` is not one (a bug)."""
    for cls in type(e).__mro__:
        if cls.__name__ in USER_ERRORS and cls.__module__.startswith("mv4d_core."):
            text = " ".join((e.for_cli() if hasattr(e, "for_cli") else str(e)).split())
            if getattr(e, "parameter", None) == "checkpoint" and "mv4d" not in text:
                text += ("; give a checkpoint written by `mv4d train` (RUN_DIR/last.pt), an .onnx from `mv4d "
                         "export` for --engine onnxruntime, or no --checkpoint for the shipped weights")
            return text
    if isinstance(e, _PATH_ERRORS):
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        return f"{e.strerror or e}{where} (check the path)"
    return None
