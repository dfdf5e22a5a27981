"""CLI flags generated from a settings model, so a field and its flag can never drift apart.

`@settings_command(ProviderSettings)` turns `def provider(settings: ProviderSettings) -> None` into a
typer command with one `--flag` per settings field (its description is the help), plus whatever other
parameters the function declares. Flags the user did not give are left out, so the environment and
the TOML file still fill them: flags > environment > TOML file > defaults.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)

_SCALARS = (bool, int, float, str, Path)
_METAVARS: dict[Any, str] = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}  # as click names them


def flag_name(field: str) -> str:
    """The flag a settings field gets: `max_concurrency` -> `--max-concurrency`."""
    return "--" + field.replace("_", "-")


def _unwrap_optional(tp: Any) -> Any:
    """`X | None` -> `X`; anything else unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _cli_type(field: str, info: FieldInfo) -> tuple[Any, str, str | None]:
    """The type typer parses the flag as, a hint for the help text, and a metavar."""
    tp = _unwrap_optional(info.annotation)
    origin = typing.get_origin(tp)
    if tp in _SCALARS:
        return tp, "", _METAVARS.get(tp)
    if origin is Literal:
        choices = "|".join(str(a) for a in typing.get_args(tp))
        return str, "", choices
    if origin is list:
        return list[str], " (repeat, or comma-separated)", "TEXT"
    if origin is dict:
        return list[str], " (repeat)", "PAIR"
    raise TypeError(f"settings field {field!r} has a type the CLI cannot express: {tp!r}")


def settings_parameters(model: type[BaseSettings]) -> list[inspect.Parameter]:
    """One keyword parameter per settings field, annotated for typer, defaulting to "not given"."""
    params = []
    for field, info in model.model_fields.items():
        cli_type, hint, metavar = _cli_type(field, info)
        help_text = (info.description or field) + hint
        flag = flag_name(field)
        decls = [f"{flag}/--no-{flag[2:]}"] if cli_type is bool else [flag]
        option = typer.Option(*decls, help=help_text, show_default=False, metavar=metavar)
        params.append(
            inspect.Parameter(
                field,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[cli_type | None, option],
            )
        )
    return params


def build_settings(model: type[S], given: dict[str, Any]) -> S:
    """Settings from the flags given (the rest from env/TOML/defaults); exit 2 with the reason if invalid."""
    try:
        return model(**{k: v for k, v in given.items() if v is not None and v != []})
    except (ValidationError, ValueError) as exc:
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from None


def settings_command(model: type[S]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command taking `settings: <model>` one flag per field of `model`."""

    def wrap(func: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "settings"]
        fields = set(model.model_fields)
        clash = fields & {p.name for p in own}
        if clash:
            raise TypeError(f"{func.__name__}: parameters {sorted(clash)} shadow settings fields")

        @functools.wraps(func)
        def command(**kwargs: Any) -> None:
            settings = build_settings(model, {k: kwargs.pop(k) for k in fields})
            func(settings=settings, **kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + settings_parameters(model)
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer must read the generated signature, not the original one
        return command

    return wrap
