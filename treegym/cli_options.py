"""What several commands share (``collect``, ``train``): option declarations, declared once,
the consoles, and the one-line failure.

Each alias is an ``Annotated`` type with its ``typer.Option``, so a command lists
``env: EnvOpt = None`` and the help text, flags and defaults cannot drift between commands.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console

from treegym.config import POLICY_FORMS

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and the exit code (2: refused before anything ran)."""
    err_console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def parse_kwargs(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse as JSON, strings otherwise."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            fail(f"--kwarg takes key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


EnvOpt = Annotated[
    str | None, typer.Option(help="Env id (see `treegym envs`). [default: treegym/TextWorld-v0]")
]
KwargOpt = Annotated[
    list[str],
    typer.Option("--kwarg", "-k", help="Env constructor argument key=value (repeatable)."),
]
TasksOpt = Annotated[
    str | None,
    typer.Option(
        help="Task source: 'embedded' (held-out tasks of the embedded model's mix), a pattern "
        "with {seed} (e.g. 'tw-cooking:recipe=2,seed={seed}', 'toy-{seed}'), a folder of "
        "games/tasks, or one task. [default: the env's own set]"
    ),
]
SamplerOpt = Annotated[
    str | None,
    typer.Option(help="chain | tree_grpo | treepo | trace | selective. [default: tree_grpo]"),
]
ParamOpt = Annotated[
    list[str],
    typer.Option(
        "--param",
        "-p",
        help="Sampler parameter key=value (repeatable): tree_grpo m,n,l,k (default 2,2,1,3, the "
        "published setting); chain group_size (default 6); treepo segment_len,max_width,div,...; "
        "trace roots,continuations,... Leaves per task follow from these.",
    ),
]
GateOpt = Annotated[
    str | None,
    typer.Option(
        help="Gate around chain or tree_grpo: selective (Selective Rollout). [default: none]"
    ),
]
GateParamOpt = Annotated[
    list[str],
    typer.Option(
        "--gate-param",
        "-g",
        help="Gate parameter key=value (repeatable): selective k (default 10), d_l (default "
        "0.12), or_finished, ended_before_k (evaluate or pass: a group whose every chain ended "
        "before step K; default evaluate).",
    ),
]
PolicyOpt = Annotated[str | None, typer.Option(help=f"Policy: {POLICY_FORMS}. [default: embedded]")]
TemplateOpt = Annotated[
    str | None,
    typer.Option(
        help="Transcript template: react (treegym's role tokens), chat (the tokenizer's own chat "
        "template) or chat:FILE (a Jinja chat template). [default: react for a model with "
        "template.json or without a chat template, else chat]"
    ),
]
ActionFormatOpt = Annotated[
    str | None,
    typer.Option(
        help="How a turn names its command: action ('Action: <cmd>' line), tags[:NAME,...] "
        "(<action>cmd</action>; Search-R1: tags:search,answer), regex:PATTERN (with a group), "
        "choice (decoding constrained to the admissible commands), react-choice (a free "
        "thought line, then 'Action: <admissible cmd>'). [default: action under "
        "react; choice under chat where the engine can constrain]"
    ),
]
TemperatureOpt = Annotated[float | None, typer.Option(help="Sampling temperature. [default: 1.0]")]
MaxNewTokensOpt = Annotated[int | None, typer.Option(help="Tokens per turn. [default: 48]")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed of sampling and the policy. [default: 0]")]
ConcurrencyOpt = Annotated[int | None, typer.Option(help="Tasks grown at once. [default: 4]")]
WorkersOpt = Annotated[
    int | None, typer.Option(help="Env worker processes (0: in this process). [default: 2]")
]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file: TOML with the collect options as keys (env_kwargs and sampler_params "
        "as tables), or a run folder / its manifest.json to repeat that run.",
    ),
]
