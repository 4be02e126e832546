"""Load a configuration: YAML files joined by ``extends:``, ``--set`` overrides, ``${ENV}`` values.

Every problem in one run is collected and reported together, each with where it was written
(file:line), the key path as written, the bad value, what is allowed and a did-you-mean.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tuneline.config.schema import Config
from tuneline.errors import ConfigError

KeyPath = tuple[str, ...]
_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


# ---------------------------------------------------------------- schema introspection
def _sections_of(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (unwrapping Optional, Annotated, unions and lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated, list):
        found: list[type[BaseModel]] = []
        for arg in typing.get_args(annotation):
            found += [c for c in _sections_of(arg) if c not in found]
        return found
    return []


def _tag(cls: type[BaseModel]) -> str | None:
    """The discriminator value of a tagged section (its ``type`` literal), if it has one."""
    info = cls.model_fields.get("type")
    if info is None:
        return None
    args = typing.get_args(info.annotation)
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _model_at(path: KeyPath, root: type[BaseModel] = Config) -> type[BaseModel] | None:
    """The section class at a key path (list indexes skipped, union tags followed)."""
    candidates: list[type[BaseModel]] = [root]
    for name in path:
        if name.isdigit():
            continue
        tagged = [c for c in candidates if _tag(c) == name]
        if tagged:
            candidates = tagged
            continue
        nxt: list[type[BaseModel]] = []
        for cls in candidates:
            if name in cls.model_fields:
                nxt += _sections_of(cls.model_fields[name].annotation)
        if not nxt:
            return None
        candidates = nxt
    return candidates[0] if len(candidates) == 1 else None


def path_fields(cls: type[BaseModel] = Config, prefix: KeyPath = ()) -> set[KeyPath]:
    """Key paths of fields that hold filesystem paths (marked in the schema); '*' stands for a list index."""
    found: set[KeyPath] = set()
    for name, info in cls.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("tuneline_path"):
            found.add((*prefix, name))
        is_list = typing.get_origin(info.annotation) is list
        for sub in _sections_of(info.annotation):
            found |= path_fields(sub, (*prefix, name, "*") if is_list else (*prefix, name))
    return found


# ---------------------------------------------------------------- reading YAML
def _dotted(path: KeyPath) -> str:
    if not path:
        return "<top level>"
    return "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path).lstrip(".")


def _walk_nodes(
    node: yaml.Node, prefix: KeyPath, where: str, lines: dict[KeyPath, str], problems: list[str]
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            loc = f"{where}:{key_node.start_mark.line + 1}"
            if key in seen:
                problems.append(
                    f"{loc}: {_dotted((*prefix, key))}: key given twice in the same mapping; keep one"
                )
            seen.add(key)
            lines[(*prefix, key)] = loc
            _walk_nodes(value_node, (*prefix, key), where, lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*prefix, str(i))] = f"{where}:{item.start_mark.line + 1}"
            _walk_nodes(item, (*prefix, str(i)), where, lines, problems)


def _read_yaml(path: Path, lines: dict[KeyPath, str], problems: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        problems.append(f"{path}: config file not found; check the path")
        return None
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problems.append(
            f"{at}: not valid YAML ({getattr(exc, 'problem', None) or exc}); fix the syntax there"
        )
        return None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(
            f"{path}: the top level must be a mapping of sections (model:, data:, ...), "
            f"got {type(data).__name__}"
        )
        return None
    if node is not None:
        _walk_nodes(node, (), str(path), lines, problems)
    return data


def _resolve_at(node: Any, key_path: KeyPath, base_dir: Path) -> None:
    if not key_path or not isinstance(node, dict | list):
        return
    head, rest = key_path[0], key_path[1:]
    if head == "*":
        for item in node if isinstance(node, list) else []:
            _resolve_at(item, rest, base_dir)
        return
    if not isinstance(node, dict) or head not in node:
        return
    if rest:
        _resolve_at(node[head], rest, base_dir)
        return
    value = node[head]
    if isinstance(value, str) and value and "${" not in value:
        p = Path(value).expanduser()
        node[head] = str(p if p.is_absolute() else (base_dir / p).resolve())


def _resolve_paths(data: dict[str, Any], base_dir: Path) -> None:
    for key_path in path_fields():
        _resolve_at(data, key_path, base_dir)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_file(
    path: Path, lines: dict[KeyPath, str], problems: list[str], chain: tuple[Path, ...]
) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        problems.append(f"{path}: extends forms a cycle ({cycle}); remove one of the links")
        return {}
    own_lines: dict[KeyPath, str] = {}
    data = _read_yaml(path, own_lines, problems)
    if data is None:
        return {}
    bases = data.pop("extends", None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        problems.append(f"{own_lines.get(('extends',), path)}: extends must be a file name or a list of them")
        bases = []
    merged: dict[str, Any] = {}
    for base in bases:
        merged = _deep_merge(merged, _load_file(path.parent / base, lines, problems, (*chain, path)))
    _resolve_paths(data, path.parent)
    lines.update(own_lines)  # the file that extends wins, for values and for line numbers
    return _deep_merge(merged, data)


# ---------------------------------------------------------------- overrides and environment
def _apply_set(data: dict[str, Any], override: str, lines: dict[KeyPath, str], problems: list[str]) -> None:
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        problems.append(f"--set {override!r}: expected KEY.PATH=VALUE, for example --set train.max_steps=50")
        return
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = tuple(key.split("."))
    target: Any = data
    for i, name in enumerate(parts[:-1]):
        if isinstance(target, list):
            if not name.isdigit() or int(name) >= len(target):
                problems.append(f"--set {override!r}: {_dotted(parts[: i + 1])} is not an item of the list")
                return
            nxt = target[int(name)]
        else:
            nxt = target.get(name)
            if nxt is None:
                nxt = target[name] = {}
        if not isinstance(nxt, dict | list):
            problems.append(f"--set {override!r}: {_dotted(parts[: i + 1])} is a value, not a section")
            return
        target = nxt
    if isinstance(target, list):
        problems.append(f"--set {override!r}: give an index into {_dotted(parts[:-1])}")
        return
    target[parts[-1]] = value
    wildcard = tuple("*" if p.isdigit() else p for p in parts)
    if wildcard in path_fields() and isinstance(value, str) and value and not Path(value).is_absolute():
        target[parts[-1]] = str(Path(value).expanduser().resolve())
    lines[parts] = f"--set {key}"


def _interpolate(
    value: Any,
    path: KeyPath,
    env: typing.Mapping[str, str],
    templates: dict[str, str],
    lines: dict[KeyPath, str],
    problems: list[str],
) -> Any:
    if isinstance(value, dict):
        return {
            k: _interpolate(v, (*path, str(k)), env, templates, lines, problems) for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _interpolate(v, (*path, str(i)), env, templates, lines, problems) for i, v in enumerate(value)
        ]
    if not isinstance(value, str) or "$" not in value:
        return value

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            f"{_where(path, lines)}{_dotted(path)}: environment variable {name} is not set; "
            f"export it or write ${{{name}:-default}}"
        )
        return ""

    out = _ENV.sub(sub, value)
    if _ENV.search(value.replace("$$", "")):
        templates[".".join(path)] = value
    return out


# ---------------------------------------------------------------- error formatting
def _where(path: KeyPath, lines: dict[KeyPath, str]) -> str:
    for n in range(len(path), 0, -1):
        if path[:n] in lines:
            return lines[path[:n]] + ": "
    return ""


def _show(value: Any, path: KeyPath, templates: dict[str, str]) -> str:
    if ".".join(path) in templates:
        return repr(templates[".".join(path)])
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _strip_tags(loc: tuple[Any, ...]) -> KeyPath:
    """pydantic puts a union's tag into the location (sources.0.manifest.path): drop it."""
    tags = _all_tags()
    return tuple(
        str(part)
        for i, part in enumerate(loc)
        if not (i > 0 and isinstance(loc[i - 1], int) and isinstance(part, str) and part in tags)
    )


@functools.cache
def _all_tags() -> frozenset[str]:
    tags: set[str] = set()
    stack: list[type[BaseModel]] = [Config]
    seen: set[type[BaseModel]] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        tag = _tag(cls)
        if tag:
            tags.add(tag)
        for info in cls.model_fields.values():
            stack += _sections_of(info.annotation)
    return frozenset(tags)


def _format_error(err: Mapping[str, Any], lines: dict[KeyPath, str], templates: dict[str, str]) -> str:
    raw = tuple(p for p in err["loc"] if p != "[key]")  # dict-key errors end in '[key]'
    path = _strip_tags(raw)
    kind = err["type"]
    head = f"{_where(path, lines)}{_dotted(path)}"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        close = difflib.get_close_matches(str(ctx.get("tag")), allowed, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return (
            f"{_where((*path, 'type'), lines)}{_dotted((*path, 'type'))}: {ctx.get('tag')!r} is not a known "
            f"type; use one of {ctx.get('expected_tags')}{hint}"
        )
    if kind == "extra_forbidden":
        parent = _model_at(tuple(str(p) for p in raw[:-1]))
        known = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(path[-1], known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"{head}: unknown key; {hint}allowed keys here: {', '.join(known)}"
    if kind == "missing":
        return f"{head}: required key is missing; add it"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        allowed = re.findall(r"'([^']*)'", expected)
        got = err.get("input")
        close = difflib.get_close_matches(str(got), allowed, n=1, cutoff=0.5) if allowed else []
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{head}: {_show(got, path, templates)} is not allowed; use one of {expected}{hint}"
    got = _show(err.get("input"), path, templates)
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"{head}: {msg} (got {got})"


# ---------------------------------------------------------------- entry points
def load_config(
    path: str | Path, overrides: typing.Sequence[str] = (), env: typing.Mapping[str, str] | None = None
) -> Config:
    """Read, merge, override, interpolate and validate a config; ConfigError lists every problem."""
    env = os.environ if env is None else env
    lines: dict[KeyPath, str] = {}
    problems: list[str] = []
    data = _load_file(Path(path), lines, problems, ())
    for item in overrides:
        _apply_set(data, item, lines, problems)
    templates: dict[str, str] = {}
    data = _interpolate(data, (), env, templates, lines, problems)
    if problems and not data:
        raise ConfigError(problems, source=str(path))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        seen = set()
        for err in exc.errors(include_url=False):
            text = _format_error(err, lines, templates)
            if text not in seen:
                seen.add(text)
                problems.append(text)
        raise ConfigError(problems, source=str(path)) from None
    if problems:
        raise ConfigError(problems, source=str(path))
    config._templates.update(templates)
    return config


def with_overrides(config: Config, overrides: typing.Mapping[str, Any], *, source: str) -> Config:
    """``config`` with dotted keys set to new values (a sweep's trial), validated like ``--set`` overrides;
    the result has no sweep section. ConfigError names ``source`` and lists every problem."""
    data = to_dict(config, redact=False)
    data.pop("sweep", None)
    lines: dict[KeyPath, str] = {}
    problems: list[str] = []
    for key, value in overrides.items():
        _apply_set(data, f"{key}={json.dumps(value)}", lines, problems)
        lines[tuple(key.split("."))] = f"{source} {key}"
    try:
        trial = Config.model_validate(data)
    except ValidationError as exc:
        problems += list(dict.fromkeys(_format_error(e, lines, {}) for e in exc.errors(include_url=False)))
    if problems:
        raise ConfigError(problems, source=source)
    trial._templates.update(config._templates)
    return trial


def to_dict(config: Config, *, redact: bool = True) -> dict[str, Any]:
    """The resolved configuration as plain data; ${ENV} values put back as written unless redact=False."""
    data = config.model_dump(mode="json")
    if redact:
        for dotted, template in config._templates.items():
            parts = dotted.split(".")
            target: Any = data
            for name in parts[:-1]:
                target = target[int(name)] if isinstance(target, list) else target[name]
            if isinstance(target, list):
                target[int(parts[-1])] = template
            else:
                target[parts[-1]] = template
    return data


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


# Sections that say where and how a trained model is deployed or launched, not what a run produces:
# left out of the config hash, so editing them neither starts a new run nor changes a version's lineage.
# loop (tuneline loop) operates on registered versions; a retrain's own choices (warm start, the champion,
# both datasets) are tags on the version it registers.
DEPLOYMENT_SECTIONS = ("serve", "launch", "loop")


def config_hash(config: Config) -> str:
    """sha256 of the resolved config (secrets as their ${ENV} templates), without deployment sections."""
    d = {k: v for k, v in to_dict(config).items() if k not in DEPLOYMENT_SECTIONS}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def read_resolved(path: str | Path) -> Config:
    """A run's ``config.resolved.yaml`` validated as a :class:`Config`, ``${ENV}`` values left as written
    (the file stores them as templates; they are not resolved against this machine's environment)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = list(dict.fromkeys(_format_error(e, {}, {}) for e in exc.errors(include_url=False)))
        raise ConfigError(problems, source=str(path)) from None
