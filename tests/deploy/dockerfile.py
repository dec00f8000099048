"""A small Dockerfile reader: enough to take the images' ENV, USER, ENTRYPOINT/CMD,
HEALTHCHECK and COPY sources from the Dockerfiles themselves, so tests cannot drift from them.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # continuation lines joined, comments removed
    line: int


@dataclass
class Stage:
    base: str  # as written (may hold ${ARG}s)
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """The stage's ENV, later instructions winning (values as written: no expansion)."""
        env: dict[str, str] = {}
        for ins in self.all("ENV"):
            env.update(parse_env(ins.args))
        return env

    def exec_form(self, keyword: str) -> list[str] | None:
        ins = self.last(keyword)
        return None if ins is None else parse_command(ins.args)

    def command(self) -> list[str]:
        """The container's argv: ENTRYPOINT + CMD. A Dockerfile ENTRYPOINT resets the CMD
        inherited from the base image, so only this stage's CMD counts."""
        return (self.exec_form("ENTRYPOINT") or []) + (self.exec_form("CMD") or [])

    def user(self) -> str | None:
        ins = self.last("USER")
        return None if ins is None else ins.args.strip()


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]  # ARGs before the first FROM, with their defaults
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolve(self, text: str) -> str:
        """Expand ${ARG} / $ARG with the global ARG defaults (for FROM lines)."""

        def sub(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            return self.global_args.get(name, m.group(0))

        return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, text)

    def base_images(self) -> list[str]:
        """External base images of all stages (stage-to-stage FROMs left out)."""
        names = {s.name for s in self.stages if s.name}
        return [self.resolve(s.base) for s in self.stages if self.resolve(s.base) not in names]


def parse_env(args: str) -> dict[str, str]:
    tokens = shlex.split(args, posix=True)
    if tokens and "=" not in tokens[0]:  # legacy `ENV key value`
        return {tokens[0]: args.split(None, 1)[1].strip()}
    return dict(token.split("=", 1) for token in tokens)


def parse_command(args: str) -> list[str]:
    args = args.strip()
    if args.startswith("["):
        parsed = json.loads(args)
        assert isinstance(parsed, list)
        return [str(a) for a in parsed]
    return ["/bin/sh", "-c", args]


def parse_healthcheck(args: str) -> tuple[dict[str, str], list[str]]:
    """`--interval=15s ... CMD ["python", "x.py"]` -> ({"interval": "15s", ...}, argv)."""
    options: dict[str, str] = {}
    rest = args.strip()
    while rest.startswith("--"):
        option, rest = rest.split(None, 1)
        key, value = option[2:].split("=", 1)
        options[key] = value
    keyword, command = rest.split(None, 1)
    assert keyword.upper() == "CMD", f"HEALTHCHECK {keyword}"
    return options, parse_command(command)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue  # comments (and parser directives), also inside continuations
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        lines.append((start, " ".join(part for part in buf if part)))
        buf = []
    if buf:
        lines.append((start, " ".join(buf)))
    return lines


def parse_dockerfile(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            if keyword == "ARG":
                key, _, default = args.strip().partition("=")
                global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, args.strip(), number))
    return Dockerfile(path, global_args, stages)
