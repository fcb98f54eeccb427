"""The command line's one contract: how commands are registered, how errors and progress reach the user.

* Every user mistake ends with one line on stderr, ``error: ...``, naming the option, file or record, and exit
  code 1: msaformer's own errors (:class:`~msaformer.errors.MsaformerError`), typer's usage errors (a missing
  option, an unknown choice, a value of the wrong type, an unknown option) and file-system errors. Ctrl-C
  prints ``interrupted`` and exits 130. Only a bug in msaformer shows a traceback.
* Running a command without arguments prints its help (stdout) and exits 0.
* ``--help`` shows clean metavars: nothing after a flag, the choices of an enumerated option, ``N``, ``X``,
  ``PATH`` or ``TEXT`` otherwise, and arguments as ``NAME...``.
* Progress bars and tables go to stderr (:data:`console`); stdout is for data.
"""

from __future__ import annotations

import contextlib
import enum
import os
import sys
import types
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from msaformer.errors import MsaformerError
from msaformer.progress import ProgressCallback, ProgressUpdate

#: Progress bars, logs and tables go to stderr; stdout is for data.
console = Console(stderr=True)

#: ``-h`` and ``--help`` on every command.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


def error_line(message: str) -> None:
    """Prints one ``error:`` line on stderr (message on one line; rich markup in it is not interpreted)."""
    text = " ".join(str(message).split())
    console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _usage_message(exc: typer.TyperException) -> str:
    """Returns the one-line text of a typer usage error, naming the option and the command's help."""
    text = exc.format_message()
    text = text.replace("Value error, ", "").replace("Invalid value for ", "")
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"{text.rstrip('.')}{where}"


def _run(main, args, kwargs) -> None:
    """Runs a command line in non-standalone mode and turns every outcome into an exit code."""
    try:
        code = main(args=args, standalone_mode=False, **kwargs)
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a command run without arguments: show its help
            typer.echo(exc.format_message())
            sys.exit(0)
        error_line(_usage_message(exc))
        sys.exit(1)
    except MsaformerError as exc:
        error_line(str(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except typer.Abort:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except OSError as exc:
        if exc.filename is None:
            raise
        error_line(f"{exc.filename}: {exc.strerror or exc}")
        sys.exit(1)
    if code == 130:  # typer turns Ctrl-C inside a command into exit code 130
        console.print("[yellow]interrupted[/]")
    sys.exit(code if isinstance(code, int) else 0)


def _clean_help_option(option):
    if option is not None:
        option.metavar = ""
    return option


class MsaformerSubGroup(TyperGroup):
    """A command group (``msaformer promoter``): clean ``--help``."""

    def get_help_option(self, ctx):
        return _clean_help_option(super().get_help_option(ctx))


class MsaformerGroup(MsaformerSubGroup):
    """The root command: runs a command line under the error contract of this module."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **kwargs):
        if not standalone_mode:
            return super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **kwargs)
        return _run(lambda **kw: super(MsaformerGroup, self).main(prog_name=prog_name, complete_var=complete_var, **kw),
                    args, kwargs)


def _metavar(param) -> str | None:
    """Returns the clean metavar of a typer parameter (see the module docstring)."""
    if getattr(param, "is_flag", False):
        return ""
    descriptor = getattr(param, "type_descriptor", None)
    choices = getattr(descriptor, "choices", None)
    if choices:
        values = [c.value if isinstance(c, enum.Enum) else str(c) for c in choices]
        return "[" + "|".join(values) + "]"
    annotation = getattr(descriptor, "annotation", None)
    base = getattr(annotation, "__args__", (annotation,))[0] if getattr(annotation, "__origin__", None) else annotation
    name = getattr(base, "__name__", "")
    if name in ("int",):
        return "N"
    if name in ("float",):
        return "X"
    if name in ("Path", "PosixPath"):
        return "PATH"
    return "TEXT"


class MsaformerCommand(TyperCommand):
    """Every msaformer command: clean metavars in ``--help`` and arguments shown as ``NAME...`` in usage."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            kind = getattr(param, "param_type_name", "")
            if param.metavar is None and kind == "option":
                param.metavar = _metavar(param)
            elif kind == "argument":
                if param.metavar is None:
                    param.metavar = (param.name or "").upper() + ("..." if param.nargs != 1 else "")
                # the name says it all; typer would add the Python type (<list[Path]>)
                param.display_type_rich = types.MethodType(lambda self, ctx: None, param)

    def get_help_option(self, ctx):
        return _clean_help_option(super().get_help_option(ctx))

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if getattr(param, "param_type_name", "") != "argument":
                continue
            name = param.metavar or (param.name or "").upper()
            pieces.append(name if param.required else f"[{name}]")
        return pieces


def new_app(help: str, **kwargs) -> typer.Typer:
    """Returns a typer app (the root or a command group) with the settings every group shares."""
    kwargs.setdefault("cls", MsaformerSubGroup)
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                       context_settings=CONTEXT_SETTINGS, **kwargs)


def command(app: typer.Typer, name: str, function) -> None:
    """Registers ``function`` as command ``name`` of ``app``: the one registration style of every group."""
    app.command(name, cls=MsaformerCommand, no_args_is_help=True)(function)


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[ProgressCallback | None]:
    """Yields a progress callback that draws a rich bar on stderr (or None when ``enabled`` is False)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[unit]}  {task.fields[detail]}"), TimeElapsedColumn(),
                   console=console, transient=False)
    tasks: dict[str, int] = {}

    def update(event: ProgressUpdate) -> None:
        if not tasks:
            bar.start()  # on the first update: a command that fails before any work prints no empty bar
        if event.label not in tasks:
            tasks[event.label] = bar.add_task(event.label, total=event.total, unit=event.unit, detail="")
        bar.update(tasks[event.label], completed=event.done, total=event.total, unit=event.unit,
                   detail=event.detail)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()


def set_verbose(verbose: bool) -> None:
    """Records ``--verbose`` for the library (and child processes): third-party log lines go to stderr."""
    from msaformer.progress import VERBOSE_ENV

    if verbose:
        os.environ[VERBOSE_ENV] = "1"
