"""``treegym collect``'s configuration: defaults, config files, validation, and wiring.

A :class:`CollectConfig` is resolved from three layers — the defaults below, an optional config
file (TOML, or JSON such as a run folder's ``manifest.json``), then command-line flags — and is
validated as a whole before anything runs, so a bad key or value is one error message, not a
traceback half-way through a collection. The resolved config is stored in the run's manifest
(``config.collect`` holds every key that changes what is sampled; ``collect.invocation`` the
rest), so ``treegym collect --config RUN`` repeats a run.

Task sources (``tasks``):

* ``embedded`` — the embedded model's task mix for the env (TextWorld: tw-cooking,
  tw-coin_collector, tw-treasure_hunter; ALFWorld: the six task types;
  :func:`~treegym.envs.embedded_mix.embedded_task`) on held-out seeds (``EMBEDDED_EVAL_SEED`` +
  ``task_seed`` …): what the default model can play but never saw.
* a pattern with ``{seed}`` — e.g. ``tw-cooking:recipe=2,seed={seed}``, ``toy-{seed}``,
  ``pick_and_place_simple:seed={seed}``; seeds ``task_seed`` … ``task_seed + n_tasks − 1``.
* a folder — every game in it (``*.z8``, ``*.ulx``, or ALFWorld ``game.tw-pddl`` folders),
  sorted; ``n_tasks`` takes the first ones.
* anything else — one task (a game file, a spec without ``{seed}``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from treegym.envs.embedded_mix import ENVS, EVAL_SEEDS, RL_SEEDS, embedded_task, env_of

EMBEDDED_EVAL_SEED = EVAL_SEEDS.start
"""First held-out seed of the embedded model's family (``scripts/train_embedded_model.py``
trains on seeds 0–9,999 and evaluates on 10,000–19,999)."""

EMBEDDED_SOURCES = {"embedded": EVAL_SEEDS, "embedded-rl": RL_SEEDS}
"""Task sources of the embedded mix: held-out seeds (collect's default), and the training
distribution's RL seeds (``treegym train``'s rounds; never in the supervised data)."""

DEFAULT_N_TASKS = 4
"""Tasks taken from a family or a pattern when ``n_tasks`` is not given."""

SAMPLER_DEFAULTS: dict[str, dict[str, Any]] = {
    "tree_grpo": {"m": 2, "n": 2, "l": 1, "k": 3},  # TreeGRPOSampler.published()
    "chain": {"group_size": 6},  # the same 6 trajectories per task as published Tree-GRPO
    "selective": {"inner": "chain", "inner.group_size": 8, "k": 10, "d_l": 0.12},  # G=8 point
}
"""Sampler parameters used when none are given (the run records the resolved ones)."""

GATE_DEFAULTS: dict[str, dict[str, Any]] = {
    "selective": {"k": 10, "d_l": 0.12},  # the Selective Rollout paper's G=8 operating point
}
"""Gates (``--gate``) that wrap the chosen sampler, with their default parameters."""

ENV_DEFAULT_TASKS = {
    "treegym/TextWorld-v0": "embedded",
    "treegym/ToyRooms-v0": "toy-{seed}",
    "treegym/ALFWorld-v0": "embedded",
    "treegym/SearchQA-v0": "test-{seed}",  # the default synthetic world's held-out questions
}

POLICY_FORMS = (
    "embedded, smollm2, hf:PATH, sglang:URL[,URL...], vllm:URL, scripted:expert[:EPSILON], "
    "scripted:random, sim[:tps=N,batch=N,latency=S,prefill=N,cache=on|off,tokens=N]"
)
CONSTRAINING_POLICIES = ("embedded", "smollm2", "hf", "sglang", "vllm")
"""Policy kinds whose engine can constrain decoding (``--action-format choice``)."""
EXECUTORS = ("process", "ray")
GAME_FILES = ("*.z8", "*.ulx", "game.tw-pddl")

IDENTITY_KEYS = (
    "env", "env_kwargs", "tasks", "n_tasks", "task_seed", "sampler", "sampler_params",
    "gate", "gate_params", "policy", "tokenizer", "template", "action_format", "temperature",
    "max_new_tokens", "context_length", "token_budget", "seed",
)  # fmt: skip
"""Keys that change what a run samples: stored in ``config.collect`` (the run's identity)."""
RUNTIME_KEYS = ("concurrency", "workers", "executor", "ray_address")
"""Keys that change only how fast: stored in ``collect.invocation``, free to differ on resume."""
LOCATION_KEYS = ("out", "name")
"""Where the run goes: accepted in a config file, never read back from a run's manifest."""


class ConfigError(ValueError):
    """A configuration that cannot run: the message is the whole explanation (one line)."""


@dataclass
class CollectConfig:
    """Everything ``treegym collect`` needs; see the module docstring for ``tasks``."""

    env: str = "treegym/TextWorld-v0"
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"max_episode_steps": 20})
    tasks: str | None = None
    """Task source; ``None``: the env's default (``ENV_DEFAULT_TASKS``)."""
    n_tasks: int | None = None
    """How many tasks; ``None``: 4 from a family or pattern, all of a folder."""
    task_seed: int = 0
    """First seed of a pattern (added to ``EMBEDDED_EVAL_SEED`` for ``embedded``)."""
    sampler: str = "tree_grpo"
    sampler_params: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``SAMPLER_DEFAULTS[sampler]`` (e.g. ``{"m": 4}``, ``{"group_size": 8}``)."""
    gate: str | None = None
    """A gate wrapping the sampler (``selective``: the Selective Rollout gate around ``chain``
    or ``tree_grpo``); ``None``: no gate. Same as ``sampler = "selective"`` with ``inner``."""
    gate_params: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``GATE_DEFAULTS[gate]`` (e.g. ``{"k": 10, "d_l": 0.12}``)."""
    policy: str = "embedded"
    tokenizer: str | None = None
    """Tokenizer folder for ``sglang:``/``vllm:``/``scripted:`` policies; ``None``: the
    embedded one."""
    template: str | None = None
    """``react``, ``chat`` or ``chat:FILE`` (``policies/make_template.py``); ``None``: the
    model's default, resolved when the policy is built (the run records the resolved one)."""
    action_format: str | None = None
    """``action``, ``tags[:NAMES]``, ``regex:PATTERN`` or ``choice`` (``policies/actions.py``);
    ``None``: the template's default, resolved when the policy is built."""
    temperature: float = 1.0
    max_new_tokens: int = 48
    context_length: int = 2048
    token_budget: int | None = None
    """Generated tokens allowed per task (``None``: no limit beyond the sampler's leaves)."""
    seed: int = 0
    concurrency: int = 4
    """Tasks grown at once."""
    workers: int = 2
    """Env worker processes (0: envs run in this process), or Ray actors with ``executor="ray"``."""
    executor: str = "process"
    """``process`` (local worker processes; ``workers=0``: in this process) or ``ray`` (actors)."""
    ray_address: str | None = None
    """Ray cluster to join with ``executor="ray"`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``);
    ``None``: start a local Ray."""
    out: str | None = None
    name: str | None = None

    # ------------------------------------------------------------------ derived
    @property
    def task_source(self) -> str:
        if self.tasks is not None:
            return self.tasks
        if self.env in ENV_DEFAULT_TASKS:
            return ENV_DEFAULT_TASKS[self.env]
        raise ConfigError(f"{self.env} has no default task set; give one with --tasks")

    @property
    def resolved_n_tasks(self) -> int | None:
        """``n_tasks``, or the default 4 of a family or pattern (``None``: all of a folder)."""
        if self.n_tasks is not None:
            return self.n_tasks
        source = self.task_source
        if source in EMBEDDED_SOURCES or "{seed}" in source:
            return DEFAULT_N_TASKS
        return None

    def resolved_sampler_params(self) -> dict[str, Any]:
        return {**SAMPLER_DEFAULTS.get(self.sampler, {}), **self.sampler_params}

    def resolved_gate_params(self) -> dict[str, Any]:
        return {**GATE_DEFAULTS.get(self.gate, {}), **self.gate_params} if self.gate else {}

    def out_path(self, now: _dt.datetime | None = None) -> Path:
        if self.out:
            return Path(self.out).expanduser()
        stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
        return Path("runs") / (self.name or stamp)

    def identity(self) -> dict[str, Any]:
        """The resolved keys that change what is sampled (stored as ``config.collect``)."""
        out = {k: getattr(self, k) for k in IDENTITY_KEYS}
        out["tasks"] = self.task_source
        out["n_tasks"] = self.resolved_n_tasks
        out["sampler_params"] = self.resolved_sampler_params()
        out["gate_params"] = self.resolved_gate_params()
        return json.loads(json.dumps(out))

    def invocation(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in RUNTIME_KEYS}
        defaults = {"executor": "process", "ray_address": None}  # recorded only when changed
        return {k: v for k, v in out.items() if k not in defaults or v != defaults[k]}

    # ------------------------------------------------------------------ building
    def merged(self, overrides: Mapping[str, Any], source: str) -> CollectConfig:
        """A copy with ``overrides`` applied (unknown keys and wrong types are errors)."""
        return dataclasses.replace(self, **_checked(overrides, source))

    def validate(self) -> None:
        """Check everything that can be checked without running (raises :class:`ConfigError`)."""
        self.build_sampler()
        spec = parse_policy(self.policy)
        self._validate_template(spec)
        for name, value, low in (
            ("n_tasks", self.n_tasks, 1), ("token_budget", self.token_budget, 1),
            ("max_new_tokens", self.max_new_tokens, 1), ("concurrency", self.concurrency, 1),
            ("workers", self.workers, 0), ("context_length", self.context_length, 2),
        ):  # fmt: skip
            if value is not None and value < low:
                note = " (a budget of zero collects nothing)" if name == "token_budget" else ""
                raise ConfigError(f"{name.replace('_', '-')} must be >= {low}, got {value}{note}")
        if self.max_new_tokens >= self.context_length:
            raise ConfigError(
                f"max-new-tokens ({self.max_new_tokens}) must be below context-length "
                f"({self.context_length})"
            )
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if self.executor not in EXECUTORS:
            raise ConfigError(
                f"unknown executor {self.executor!r}{_suggest(self.executor, EXECUTORS)}; "
                f"use one of: {', '.join(EXECUTORS)}"
            )
        if self.executor == "ray" and self.workers < 1:
            raise ConfigError("--executor ray needs --workers >= 1 (the number of env actors)")
        if self.ray_address and self.executor != "ray":
            raise ConfigError("--ray-address needs --executor ray")
        tables = (self.env_kwargs, self.sampler_params, self.gate_params)
        if not all(isinstance(t, dict) for t in tables):
            raise ConfigError("env_kwargs, sampler_params and gate_params must be tables")
        if self.gate_params and not self.gate:
            raise ConfigError("gate parameters (-g) need a gate: --gate selective")

    def _validate_template(self, spec: PolicySpec) -> None:
        """A known template and action format, and a constraint only for engines that can."""
        from treegym.policies.actions import ActionFormatError, parse_action_format

        name, colon, file = (self.template or "").partition(":")
        if self.template is not None and not (
            (name == "react" and not colon) or (name == "chat" and (file or not colon))
        ):
            raise ConfigError(
                f"unknown template {self.template!r}; use one of: react, chat, chat:FILE"
            )
        if self.action_format is None:
            return
        try:
            fmt = parse_action_format(self.action_format)
        except ActionFormatError as exc:
            raise ConfigError(str(exc)) from None
        if fmt.constrained and spec.kind not in CONSTRAINING_POLICIES:
            raise ConfigError(
                f"--action-format {fmt.spec} needs an engine that constrains decoding, and "
                f"--policy {self.policy} cannot; use {', '.join(CONSTRAINING_POLICIES)}, or "
                "another --action-format"
            )

    def build_sampler(self) -> Any:
        sampler = build_sampler(self.sampler, self.resolved_sampler_params())
        if self.gate is None:
            return sampler
        if self.gate not in GATE_DEFAULTS:
            raise ConfigError(
                f"unknown gate {self.gate!r}{_suggest(self.gate, GATE_DEFAULTS)}; "
                f"choose one of {', '.join(GATE_DEFAULTS)}"
            )
        return wrap_in_gate(self.gate, sampler, self.resolved_gate_params())


def sampler_parameters(cls: type) -> list[str]:
    """What ``-p key=value`` can set on a sampler class: its scalar dataclass fields, and
    ``inner`` (a sampler name) for samplers that wrap another one."""
    out = []
    for f in fields(cls):
        if f.name in ("name", "estimators"):
            continue
        if f.name == "inner":
            out.append(f.name)
            continue
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if default is None or isinstance(default, (bool, int, float, str)):
            out.append(f.name)
    return out


def build_sampler(name: str, params: Mapping[str, Any]) -> Any:
    """A sampler from its name and ``-p`` parameters; ``inner.KEY`` parameters go to the
    wrapped sampler named by ``inner`` (e.g. ``selective`` with ``inner=chain``)."""
    from treegym.harness import SAMPLERS

    if name not in SAMPLERS:
        raise ConfigError(
            f"unknown sampler {name!r}{_suggest(name, SAMPLERS)}; "
            f"choose one of {', '.join(sorted(SAMPLERS))}"
        )
    cls = SAMPLERS[name]
    known = sampler_parameters(cls)
    own = {k: v for k, v in params.items() if not k.startswith("inner.")}
    nested = {k[len("inner.") :]: v for k, v in params.items() if k.startswith("inner.")}
    nested_keys = [f"inner.{k}" for k in nested] if "inner" not in known else []
    _check_known(f"sampler {name}", [*own, *nested_keys], known)
    if "inner" in own:
        inner_name = own["inner"]
        if not isinstance(inner_name, str) or inner_name == name:
            raise ConfigError(
                f"sampler {name}: inner must name another sampler, got {inner_name!r}"
            )
        inner_params = {**SAMPLER_DEFAULTS.get(inner_name, {}), **nested}
        own["inner"] = build_sampler(inner_name, inner_params)
    return _construct(f"sampler {name}", cls, own)


def wrap_in_gate(gate: str, inner: Any, params: Mapping[str, Any]) -> Any:
    """``inner`` wrapped by the gate sampler registered as ``gate`` (``-g`` parameters)."""
    from treegym.harness import SAMPLERS

    cls = SAMPLERS[gate]
    _check_known(f"gate {gate}", list(params), [k for k in sampler_parameters(cls) if k != "inner"])
    return _construct(f"gate {gate}", cls, {**params, "inner": inner})


def _check_known(what: str, keys: list[str], known: list[str]) -> None:
    """Refuse the first key of ``keys`` that ``what`` (e.g. ``sampler chain``) does not take."""
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ConfigError(
            f"unknown parameter {unknown[0]!r} for {what}"
            f"{_suggest(unknown[0], known)}; its parameters are {', '.join(known)}"
        )


def _construct(what: str, cls: type, params: Mapping[str, Any]) -> Any:
    """``cls(**params)``, with the class's own refusal as a :class:`ConfigError`."""
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}") from None


# ---------------------------------------------------------------------- config files
def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_FIELD_TYPES = {
    "env": (str,), "env_kwargs": (dict,), "tasks": (str, type(None)),
    "n_tasks": (int, type(None)), "task_seed": (int,), "sampler": (str,),
    "sampler_params": (dict,), "gate": (str, type(None)), "gate_params": (dict,),
    "policy": (str,), "tokenizer": (str, type(None)), "template": (str, type(None)),
    "action_format": (str, type(None)),
    "temperature": (float, int), "max_new_tokens": (int,), "context_length": (int,),
    "token_budget": (int, type(None)), "seed": (int,), "concurrency": (int,), "workers": (int,),
    "executor": (str,), "ray_address": (str, type(None)),
    "out": (str, type(None)), "name": (str, type(None)),
}  # fmt: skip


def _checked(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    out = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key not in _FIELD_TYPES:
            raise ConfigError(
                f"{source}: unknown config key {raw_key!r}{_suggest(key, _FIELD_TYPES)}; "
                f"known keys: {', '.join(_FIELD_TYPES)}"
            )
        types = _FIELD_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join("none" if t is type(None) else t.__name__ for t in types)
            raise ConfigError(f"{source}: {key} must be {want}, got {value!r}")
        out[key] = dict(value) if isinstance(value, dict) else value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Config keys from a TOML file, a JSON file, a run's ``manifest.json`` or a run folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(errors="replace")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    else:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ModuleNotFoundError:
                raise ConfigError("TOML config files need Python >= 3.11 (or tomli)") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a table of key = value")
    if data.get("format") == "treegym-run":  # a run's manifest: read its recorded config
        collect = (data.get("config") or {}).get("collect")
        if not isinstance(collect, dict):
            raise ConfigError(f"{path}: this run was not made by treegym collect (no config)")
        invocation = (data.get("collect") or {}).get("invocation") or {}
        return {**collect, **{k: v for k, v in invocation.items() if k in RUNTIME_KEYS}}
    return data


def resolve_config(
    config_file: str | Path | None,
    overrides: Mapping[str, Any],
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    sampler_params: Mapping[str, Any] | None = None,
    gate_params: Mapping[str, Any] | None = None,
) -> tuple[CollectConfig, str | None]:
    """Defaults ← config file ← flags (``None`` flags are not given); validated.
    ``env_kwargs``/``sampler_params``/``gate_params`` (``-k``/``-p``/``-g``) update the tables
    key by key."""
    cfg = CollectConfig()
    source = None
    if config_file is not None:
        source = str(config_file)
        cfg = cfg.merged(read_config_file(config_file), source)
    cfg = cfg.merged({k: v for k, v in overrides.items() if v is not None}, "command line")
    if env_kwargs:
        cfg.env_kwargs = {**cfg.env_kwargs, **env_kwargs}
    if sampler_params:
        cfg.sampler_params = {**cfg.sampler_params, **sampler_params}
    if gate_params:
        cfg.gate_params = {**cfg.gate_params, **gate_params}
    cfg.validate()
    return cfg, source


# ---------------------------------------------------------------------- executors
def env_creator(env_id: str) -> Any:
    """The class (or factory) a registered env id makes, without making one."""
    import gymnasium
    from gymnasium.envs.registration import load_env_creator

    import treegym.envs  # noqa: F401 - registers the built-in and plugin envs

    entry = gymnasium.spec(env_id).entry_point
    return entry if callable(entry) else load_env_creator(entry)


def env_kwargs_for_run(cfg: CollectConfig) -> dict[str, Any]:
    """The env's constructor arguments for a run: ``expert_plan=False`` unless the policy is
    scripted or the user asked, where the env has that switch. Only scripted policies read
    the plan, and TextWorld's winning-policy search costs 4x the step (9.5 vs 2.2 ms)."""
    kwargs = dict(cfg.env_kwargs)
    if "expert_plan" in kwargs or cfg.policy.startswith("scripted"):
        return kwargs
    import inspect

    try:
        takes_plan = "expert_plan" in inspect.signature(env_creator(cfg.env)).parameters
    except (TypeError, ValueError):
        takes_plan = False
    return {**kwargs, "expert_plan": False} if takes_plan else kwargs


def build_executor(cfg: CollectConfig) -> Any:
    """The env executor of ``cfg``: Ray actors, worker processes, or this process."""
    from treegym.harness import InProcessExecutor, ProcessExecutor

    kwargs = env_kwargs_for_run(cfg)
    if cfg.executor == "ray":
        from treegym.harness.ray_executor import RayExecutor, RayUnavailableError

        try:
            return RayExecutor(cfg.env, kwargs, n_workers=cfg.workers, address=cfg.ray_address)
        except RayUnavailableError as exc:
            raise ConfigError(str(exc)) from None
    if cfg.workers:
        return ProcessExecutor(cfg.env, kwargs, n_workers=cfg.workers)
    return InProcessExecutor(cfg.env, kwargs)


# ---------------------------------------------------------------------- policies
@dataclass(frozen=True)
class PolicySpec:
    kind: str  # embedded | hf | sglang | vllm | scripted | sim
    target: str = ""  # model path, URL, scripted mode, or the sim engine's KEY=VALUE list
    epsilon: float = 0.2


def parse_policy(spec: str) -> PolicySpec:
    kind, _, rest = spec.partition(":")
    if kind in ("embedded", "smollm2") and not rest:
        return PolicySpec(kind)
    if kind in ("hf", "sglang", "vllm") and rest:
        return PolicySpec(kind, rest)
    if kind == "scripted" and rest:
        mode, _, eps = rest.partition(":")
        if mode == "expert":
            try:
                epsilon = float(eps) if eps else 0.2
            except ValueError:
                raise ConfigError(
                    f"scripted:expert takes an epsilon in [0, 1], got {eps!r}"
                ) from None
            if not 0.0 <= epsilon <= 1.0:
                raise ConfigError(f"scripted:expert takes an epsilon in [0, 1], got {eps!r}")
            return PolicySpec("scripted", "expert", epsilon)
        if mode == "random" and not eps:
            return PolicySpec("scripted", "random", 1.0)
    if kind == "sim":
        from treegym.policies.sim import SimConfig

        try:
            SimConfig.parse(rest)
        except ValueError as exc:
            raise ConfigError(f"--policy {spec}: {exc}") from None
        return PolicySpec("sim", rest)
    raise ConfigError(f"unknown policy {spec!r}; use one of: {POLICY_FORMS}")


def build_policy(cfg: CollectConfig) -> tuple[Any, Any]:
    """``(policy, template)`` for ``cfg.policy`` (models load here); ``cfg.template`` and
    ``cfg.action_format`` are set to the resolved choices, so the run's manifest names them."""
    from transformers.utils import logging as hf_logging

    from treegym.policies import ScriptedPolicy

    hf_logging.disable_progress_bar()  # "Loading weights" bars would garble the progress display
    spec = parse_policy(cfg.policy)
    if spec.kind in ("embedded", "smollm2", "hf"):
        policy: Any = _local_policy(cfg, spec)
        return policy, resolve_template(cfg, policy.tokenizer, policy.model_path, spec)
    from transformers import AutoTokenizer

    from treegym.policies.embedded import embedded_model_path

    tok_path = Path(cfg.tokenizer).expanduser() if cfg.tokenizer else embedded_model_path()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tok_path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a tokenizer from {tok_path}: {exc}") from None
    template = resolve_template(cfg, tokenizer, tok_path, spec)
    if spec.kind == "sglang":
        from treegym.policies.sglang import SGLangPolicy

        return SGLangPolicy(spec.target), template
    if spec.kind == "vllm":
        from treegym.policies.vllm import VLLMPolicy

        return VLLMPolicy(spec.target), template
    if spec.kind == "sim":
        from treegym.policies.sim import SimConfig, SimPolicy

        return SimPolicy(template, SimConfig.parse(spec.target), seed=cfg.seed), template
    return ScriptedPolicy(template, spec.target, epsilon=spec.epsilon, seed=cfg.seed), template


def local_model_path(spec: PolicySpec) -> Path:
    """The model folder of an ``embedded``, ``smollm2`` or ``hf:PATH`` policy (SmolLM2 is
    converted into the cache the first time)."""
    from treegym.policies.embedded import embedded_model_path
    from treegym.policies.smollm2 import SmolLM2Unavailable, smollm2_model_path

    if spec.kind == "embedded":
        return embedded_model_path()
    if spec.kind == "smollm2":
        try:
            return smollm2_model_path()
        except SmolLM2Unavailable as exc:
            raise ConfigError(str(exc)) from None
    return Path(spec.target)


def _local_policy(cfg: CollectConfig, spec: PolicySpec) -> Any:
    from treegym.policies import PolicyError
    from treegym.policies.hf import HFPolicy

    path = local_model_path(spec)
    if not path.is_dir():
        raise ConfigError(f"model folder not found: {path}")
    try:
        return HFPolicy(path, seed=cfg.seed)
    except (PolicyError, OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the model in {path}: {exc}") from None


def resolve_template(cfg: CollectConfig, tokenizer: Any, path: Path, spec: PolicySpec) -> Any:
    """The template of ``cfg`` for ``tokenizer`` (defaults in ``policies/make_template.py``);
    records the resolved template and action format in ``cfg``."""
    from treegym.policies.actions import ActionFormatError
    from treegym.policies.make_template import default_template_kind, make_template
    from treegym.policies.template import TemplateError

    if spec.kind in ("scripted", "sim"):  # they write ReAct turns ("Thought: … Action: …")
        if cfg.template not in (None, "react"):
            raise ConfigError(f"--policy {cfg.policy} writes ReAct turns: use --template react")
        kind = "react"
    else:
        kind = cfg.template or default_template_kind(tokenizer, path)
    try:
        template = make_template(tokenizer, path, kind, cfg.action_format,
                                 can_constrain=spec.kind in CONSTRAINING_POLICIES)  # fmt: skip
    except ActionFormatError as exc:
        raise ConfigError(str(exc)) from None
    except TemplateError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    cfg.template, cfg.action_format = kind, template.action_format.spec
    return template


# ---------------------------------------------------------------------- tasks
def task_list(cfg: CollectConfig) -> list[tuple[str, Any, int]]:
    """``[(task_id, task, reset seed)]`` of the config's task source (nothing is made yet)."""
    source = cfg.task_source
    n = cfg.n_tasks
    if source in EMBEDDED_SOURCES:
        mix = env_of(cfg.env)
        if mix is None:
            raise ConfigError(
                f"--tasks {source} has no task mix for {cfg.env}; it has one for "
                f"{', '.join(ENVS.values())}"
            )
        first = EMBEDDED_SOURCES[source].start + cfg.task_seed
        tasks = [embedded_task(mix, s) for s in range(first, first + (n or DEFAULT_N_TASKS))]
        return [(t.task_id, t.spec, t.seed) for t in tasks]
    if "{seed}" in source:
        out = []
        for s in range(cfg.task_seed, cfg.task_seed + (n or DEFAULT_N_TASKS)):
            task = source.replace("{seed}", str(s))
            out.append((task, task, s))
        return out
    path = Path(source).expanduser()
    if path.is_dir():
        found = sorted({p for pattern in GAME_FILES for p in path.rglob(pattern)})
        if not found:
            raise ConfigError(
                f"no games in {path} (looked for {', '.join(GAME_FILES)} in it and below)"
            )
        found = found[: n or len(found)]
        out = []
        for i, game in enumerate(found):
            target = game.parent if game.name == "game.tw-pddl" else game
            rel = target.relative_to(path).as_posix() if target != path else target.name
            out.append((rel, str(target), cfg.seed + i))
        return out
    if n not in (None, 1):
        raise ConfigError(
            f"--tasks {source!r} is one task (not a folder, no {{seed}} in it); "
            f"--n-tasks {n} needs a pattern such as 'tw-cooking:recipe=1,seed={{seed}}'"
        )
    return [(source, source, cfg.seed)]


def validate_tasks(cfg: CollectConfig, tasks: list[tuple[str, Any, int]]) -> None:
    """Refuse the first task the env can tell is wrong (its class's ``validate_task`` hook),
    before models load or workers start: a bad spec is one line, not a failed task later."""
    from treegym.envs import TextEnvError

    check = getattr(env_creator(cfg.env), "validate_task", None)
    if check is None:  # not a TextEnv: its reset will tell
        return
    for task_id, task, _ in tasks:
        try:
            check({"task": task})
        except (TextEnvError, TypeError, ValueError) as exc:
            raise ConfigError(f"task {task_id!r}: {exc}") from None


def prepare_tasks(
    cfg: CollectConfig, tasks: list[tuple[str, Any, int]], progress: Any = None
) -> list[tuple[str, Any, int]]:
    """Make TextWorld generator specs (and the embedded mix's tasks) into game files up front
    (two at a time), so the collection's progress is not stalled by game generation inside env
    workers."""
    from concurrent.futures import ThreadPoolExecutor

    from treegym.envs.embedded_mix import made_embedded_task
    from treegym.envs.textworld_games import is_spec, make_game

    mix = env_of(cfg.env) if cfg.task_source in EMBEDDED_SOURCES else None
    if mix is not None:
        todo = list(range(len(tasks)))
    elif cfg.env == "treegym/TextWorld-v0":
        todo = [i for i, (_, task, _) in enumerate(tasks) if is_spec(task)]
    else:
        return tasks
    out = list(tasks)

    def make(i: int) -> None:
        task_id, task, seed = tasks[i]
        path = made_embedded_task(mix, seed)[1] if mix is not None else make_game(task)
        out[i] = (task_id, str(path), seed)
        if progress is not None:
            progress()

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(make, todo))
    return out
