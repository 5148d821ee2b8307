"""Loading the application a command line names, and reporting one that cannot boot.

:func:`load_app` imports ``MODULE:ATTRIBUTE`` and checks what it names, with a
hint for the usual slips (a file name, a class, a factory, a misspelt name):
those are :class:`CliError`, one line, exit status 2.  Whatever the module
itself raises while it loads is a boot failure: :func:`boot_failure_text` is
its traceback trimmed to the application's frames (not importlib's, not
wssync's), and :class:`BootReport` lets only the first of several forked
workers failing the same way print it.  Nothing here opens a socket or serves.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import signal
import sys
import traceback
from typing import Any, List, Optional, Set, Tuple

from ._startup import refuse_to_serve
from .app import App
from .errors import ServingWhileImported, UnsupportedLibrary, WssyncError

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_IMPORTLIB = os.path.dirname(os.path.abspath(importlib.__file__)) + os.sep


class CliError(WssyncError):
    """A mistake in how the server was started; printed as one line."""


def load_app(spec: str) -> App:
    """The ``wssync.App`` (or a WSGI application, wrapped in one) ``spec`` names.

    Raises :class:`CliError` for a spec that names nothing usable; what the
    module raises while it loads propagates unchanged (a boot failure).
    """
    module_name, _, attribute = check_spec(spec)
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`, find modules in the current directory
    try:
        with refuse_to_serve(module_name):
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not exc.name or not (module_name + ".").startswith(exc.name + "."):
            raise  # the module was found; something it imports was not
        raise CliError(_not_found(module_name, str(exc))) from None
    except ServingWhileImported as exc:
        raise CliError(str(exc)) from None
    try:
        app: Any = getattr(module, attribute)
    except AttributeError:
        raise CliError(f"module {module_name!r} has no attribute {attribute!r}"
                       f"{_close_names(module, attribute)}") from None
    if isinstance(app, App):
        return app
    if not callable(app) and "engineio" in sys.modules:
        from .socketio import wsgi_app_of  # a Socket.IO object named as the app
        try:
            app = wsgi_app_of(app) or app
        except UnsupportedLibrary as exc:
            raise CliError(str(exc)) from None
    if isinstance(app, type):
        raise CliError(f"{spec} is a class; did you mean an instance, such as "
                       f"`app = {attribute}()`?")
    if callable(app):
        if _takes(app, 2) is False and _takes(app, 0):
            raise CliError(f"{spec} takes no arguments: a factory, not an app; did you mean "
                           f"what it returns, such as `app = {attribute}()`?")
        if _takes(app, 2) is not False:  # a WSGI application (Flask, Django, ...)
            wrapper = App()
            wrapper.mount_wsgi(app)
            try:
                serve_adapters(wrapper)
            except UnsupportedLibrary as exc:
                raise CliError(str(exc)) from None
            return wrapper
    raise CliError(f"{spec} is a {type(app).__name__}, not a wssync.App or WSGI callable")


def serve_adapters(app: App) -> None:
    """Let the adapters take what they serve of a mounted WSGI application (its
    Socket.IO servers); each only if its library is already imported."""
    if app.wsgi is not None and "engineio" in sys.modules:
        from .socketio import attach
        attach(app, app.wsgi.wsgi_app)


def check_spec(spec: str) -> Tuple[str, str, str]:
    """``spec`` split as ``str.partition`` does, once it has the form of
    ``MODULE:ATTRIBUTE`` and its top-level module exists (found, not run)."""
    module_name, sep, attribute = spec.partition(":")
    looks_like_file = module_name.endswith(".py") or "/" in module_name or os.sep in module_name
    if looks_like_file:
        dotted = module_name[:-3] if module_name.endswith(".py") else module_name
        dotted = dotted.replace(os.sep, "/").lstrip("./").replace("/", ".")
        raise CliError(f"{spec!r} names a file, not a module: did you mean "
                       f"'{dotted}:{attribute or 'app'}'?")
    if not sep or not module_name or not attribute:
        example = f"{module_name or 'mymodule'}:{attribute or 'app'}"
        raise CliError(f"the app is given as MODULE:ATTRIBUTE, not {spec!r} "
                       f"(e.g. {example})")
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`, find modules in the current directory
    top = module_name.partition(".")[0]
    if top not in sys.modules and importlib.util.find_spec(top) is None:
        raise CliError(_not_found(module_name, f"No module named {top!r}"))
    return module_name, sep, attribute


def _not_found(module_name: str, reason: str) -> str:
    return (f"cannot import {module_name!r}: {reason} (run from the directory that holds "
            f"it, or add that directory to PYTHONPATH)")


def _takes(function: Any, count: int) -> Optional[bool]:
    """Whether ``function`` can be called with ``count`` positional arguments
    (None: its signature cannot be read)."""
    try:
        inspect.signature(function).bind(*range(count))
    except TypeError:
        return False
    except ValueError:
        return None
    return True


def _close_names(module: Any, attribute: str) -> str:
    names = [name for name in vars(module) if not name.startswith("__")]
    close = difflib.get_close_matches(attribute, names, n=3, cutoff=0.6)
    if not close:
        close = [name for name in names if isinstance(getattr(module, name, None), App)]
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(name) for name in close) + "?"


# -- boot failures ---------------------------------------------------------------------


def boot_failure_text(exc: BaseException) -> str:
    """``exc``'s traceback (with its causes), without the frames of importlib
    and those of wssync that led to the application's code."""
    shown = traceback.TracebackException.from_exception(exc)
    pending: List[Any] = [shown]
    seen: Set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        # A SyntaxError names its file and line itself, below the frames.
        syntax = hasattr(current, "filename")
        current.stack = traceback.StackSummary.from_list(
            _users_frames(list(current.stack), syntax))
        pending += [current.__cause__, current.__context__]
    return "".join(shown.format())


def _users_frames(frames: List[traceback.FrameSummary],
                  syntax: bool) -> List[traceback.FrameSummary]:
    def importlib_frame(frame: traceback.FrameSummary) -> bool:
        return frame.filename.startswith("<frozen importlib") \
            or os.path.abspath(frame.filename).startswith(_IMPORTLIB)

    # What led to the import (the command line, wssync's loader) is not the
    # application's: its frames end where importlib's begin.
    start = next((n for n, frame in enumerate(frames) if importlib_frame(frame)), 0)
    kept = [frame for frame in frames[start:] if not importlib_frame(frame)]
    first = 0
    while first < len(kept) and os.path.abspath(kept[first].filename).startswith(_PACKAGE):
        first += 1
    # Frames of wssync after the application's (it called wssync) stay; a
    # failure inside wssync alone keeps its frames.
    return kept[first:] or ([] if syntax else kept)


def summary(exc: BaseException) -> str:
    """The exception's last line, ``KeyError: 'DATABASE_URL'``."""
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


class BootReport:
    """Which of the workers forked from one process prints a boot failure's
    traceback: the first to fail since a worker last booted.  The others (the
    same import failing in each) say one line.  One token in a pipe all of them
    inherit: a failing worker takes it, one that boots puts it back."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.write(self._write, b".")

    def take(self) -> bool:
        try:
            return bool(os.read(self._read, 1))
        except (BlockingIOError, OSError):
            return False

    def booted(self) -> None:
        self.take()
        os.write(self._write, b".")

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


def report_boot_failure(exc: BaseException, who: str,
                        report: Optional[BootReport] = None) -> None:
    """Print why ``who`` could not start: the traceback (unless another worker
    printed it), then one line."""
    if report is not None:
        # The supervisor stops the other workers when one fails: the one
        # holding the token must finish printing (the process exits next).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    if report is None or report.take():
        sys.stderr.write(boot_failure_text(exc))
        tail = ""
    else:
        tail = " (the traceback is printed once, by the first worker that failed)"
    sys.stderr.write(f"wssync: error: {who} could not start: {summary(exc)}{tail}\n")
    sys.stderr.flush()
