"""Egg variables: build a server's ``environment`` and check it against the egg's rules.

An egg variable (Pterodactyl ``GET /api/application/nests/{nest}/eggs/{egg}?include=variables``,
``attributes.relationships.variables.data[].attributes``) carries ``env_variable``,
``default_value`` and ``rules``, a Laravel validation string such as
``required|regex:/^([\\w\\d._-]+)(\\.jar)$/``. Pterodactyl checks each value against these rules
when a server is created (a 422 on ``environment.<VAR>``); we check them earlier, when a plan is
imported, so an operator sees the variable name at once.

Supported rules: required, nullable, sometimes, present, string, integer/int, numeric, boolean/bool,
alpha, alpha_num, alpha_dash, between, min, max, size, digits, digits_between, in, not_in,
regex, not_regex, url, email. Other rules are not checked here (Pterodactyl still checks them).
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

_TRUE_FALSE = {"1", "0", "true", "false", "on", "off", "yes", "no"}


def egg_variables(egg: Mapping[str, Any]) -> list[dict]:
    """The variable attributes of an egg fetched with ``include=variables``."""
    rel = (egg.get("relationships") or {}).get("variables") or {}
    return [dict(v.get("attributes") or v) for v in (rel.get("data") or [])]


def default_image(egg: Mapping[str, Any]) -> str:
    """The egg's default Docker image: ``docker_image``, else the first of ``docker_images``."""
    if egg.get("docker_image"):
        return str(egg["docker_image"])
    images = egg.get("docker_images") or {}
    if isinstance(images, Mapping) and images:
        return str(next(iter(images.values())))
    if isinstance(images, list) and images:
        return str(images[0])
    return ""


def build_environment(egg: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> tuple[dict, dict]:
    """Merge a plan's ``environment`` over the egg's variable defaults and validate the result.

    Returns ``(environment, errors)``: the ``{VAR: str}`` mapping to send, and
    ``{"environment.VAR": message}`` for every value that breaks its variable's rules or names a
    variable the egg does not have.
    """
    overrides = dict(overrides or {})
    variables = egg_variables(egg)
    known = {v.get("env_variable") for v in variables}
    env: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name in sorted(set(overrides) - known):
        errors[f"environment.{name}"] = f"is not a variable of egg {egg.get('id', '?')}"
    for var in variables:
        name = str(var.get("env_variable") or "")
        if not name:
            continue
        value = overrides.get(name, var.get("default_value"))
        value = "" if value is None else _as_text(value)
        message = check_rules(value, var.get("rules") or "")
        if message:
            errors[f"environment.{name}"] = message
        env[name] = value
    return env, errors


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def split_rules(rules: str | Iterable[str]) -> list[str]:
    """Split a Laravel rule string on ``|``, keeping a ``regex:/a|b/`` pattern in one piece."""
    if not isinstance(rules, str):
        return [str(r) for r in rules]
    out: list[str] = []
    parts = rules.split("|")
    i = 0
    while i < len(parts):
        part = parts[i]
        if part.startswith(("regex:", "not_regex:")):
            acc = part
            while not _regex_closed(acc.split(":", 1)[1]) and i + 1 < len(parts):
                i += 1
                acc += "|" + parts[i]
            part = acc
        if part.strip():
            out.append(part.strip())
        i += 1
    return out


def _regex_closed(pattern: str) -> bool:
    if len(pattern) < 2:
        return False
    delim = pattern[0]
    closing = {"(": ")", "{": "}", "[": "]", "<": ">"}.get(delim, delim)
    stripped = pattern.rstrip("imsxuADSUXJn")
    return len(stripped) >= 2 and stripped.endswith(closing) and not stripped.endswith("\\" + closing)


def _compile(pattern: str) -> re.Pattern | None:
    """Turn a PCRE literal ``/.../flags`` into a Python pattern (``None`` when it cannot)."""
    if len(pattern) < 2:
        return None
    delim = pattern[0]
    closing = {"(": ")", "{": "}", "[": "]", "<": ">"}.get(delim, delim)
    end = pattern.rfind(closing)
    if end <= 0:
        return None
    body, flags_text = pattern[1:end], pattern[end + 1:]
    flags = 0
    for ch in flags_text:
        flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}.get(ch, 0)
    try:
        return re.compile(body, flags)
    except re.error:
        return None


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def check_rules(value: str, rules: str | Iterable[str]) -> str | None:
    """Check one string ``value`` against Laravel ``rules``; returns a message or ``None``.

    Like Laravel, ``min``/``max``/``between``/``size`` compare the number when the rules say
    ``numeric`` or ``integer``, else the length of the string.
    """
    parsed = [(r.split(":", 1)[0].strip().lower(), r.split(":", 1)[1] if ":" in r else "")
              for r in split_rules(rules)]
    names = {n for n, _ in parsed}
    if value == "":
        if "required" in names:
            return "is required"
        return None  # Laravel skips other rules for an empty, non-required value
    numeric = bool(names & {"numeric", "integer", "int"})
    size = _number(value) if numeric else len(value)
    unit = "" if numeric else " characters"
    for name, arg in parsed:
        if name in ("integer", "int") and not re.fullmatch(r"[+-]?\d+", value):
            return "must be an integer"
        if name == "numeric" and _number(value) is None:
            return "must be a number"
        if name in ("boolean", "bool") and value.lower() not in _TRUE_FALSE:
            return "must be true or false (1/0)"
        if name == "alpha" and not re.fullmatch(r"[^\W\d_]+", value):
            return "may only contain letters"
        if name == "alpha_num" and not re.fullmatch(r"[^\W_]+", value):
            return "may only contain letters and numbers"
        if name == "alpha_dash" and not re.fullmatch(r"[\w-]+", value):
            return "may only contain letters, numbers, dashes and underscores"
        if name in ("min", "max", "size", "between") and size is not None:
            bounds = [_number(a) for a in arg.split(",")]
            if None in bounds or not bounds:
                continue
            if name == "min" and size < bounds[0]:
                return f"must be at least {arg}{unit}"
            if name == "max" and size > bounds[0]:
                return f"must be at most {arg}{unit}"
            if name == "size" and size != bounds[0]:
                return f"must be exactly {arg}{unit}"
            if name == "between" and len(bounds) == 2 and not bounds[0] <= size <= bounds[1]:
                return f"must be between {bounds[0]:g} and {bounds[1]:g}{unit}"
        if name == "digits" and not (value.isdigit() and str(len(value)) == arg.strip()):
            return f"must be {arg} digits"
        if name == "digits_between":
            lo, _, hi = arg.partition(",")
            if not (value.isdigit() and _number(lo) is not None and _number(hi) is not None
                    and float(lo) <= len(value) <= float(hi)):
                return f"must be between {lo} and {hi} digits"
        if name == "in" and value not in [a.strip().strip('"') for a in arg.split(",")]:
            return f"must be one of: {arg}"
        if name == "not_in" and value in [a.strip().strip('"') for a in arg.split(",")]:
            return f"must not be one of: {arg}"
        if name in ("regex", "not_regex"):
            compiled = _compile(arg)
            if compiled is None:
                continue
            matched = compiled.search(value) is not None
            if name == "regex" and not matched:
                return f"does not match the egg rule regex:{arg}"
            if name == "not_regex" and matched:
                return f"matches the forbidden pattern {arg}"
        if name == "url" and not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+", value):
            return "must be a URL"
        if name == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+", value):
            return "must be an email address"
    return None
