"""Generate ``docs/configuration.rst`` from ``config.yaml``: ``python docs/gen_configuration.py``.

``config.yaml`` is where every setting is documented (its comments say
what a key means, its type, default and environment variable); this page
is that text laid out for readers, so the two cannot drift apart.
``tests/unit/test_docs.py`` fails when the committed page differs from
what this script generates (run it after editing ``config.yaml``).

The file's layout, which this parser relies on:

- a header comment (the file's introduction), then sections, each opened by
  a ``# ===`` line, a ``# Title`` line and another ``# ===`` line;
- each key at the start of a line (``key: value``), right after its comment
  block; a comment line starting with ``Type:`` begins the key's facts.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config.yaml"
OUTPUT = ROOT / "docs" / "configuration.rst"

_KEY = re.compile(r"^([a-z][a-z0-9_]*):(.*)$")
_RULE = re.compile(r"^# ?={5,}\s*$")


@dataclass
class Key:
    name: str
    value: str
    text: list[str]
    facts: list[str]


@dataclass
class Section:
    title: str
    keys: list[Key] = field(default_factory=list)


def parse(text: str) -> tuple[list[str], list[Section]]:
    """The header comment's lines and the sections with their keys."""
    lines = text.splitlines()
    header: list[str] = []
    i = 0
    while i < len(lines) and lines[i].startswith("#") and not _RULE.match(lines[i]):
        header.append(_uncomment(lines[i]))
        i += 1
    sections: list[Section] = []
    comment: list[str] = []
    while i < len(lines):
        line = lines[i]
        if _RULE.match(line) and i + 2 < len(lines) and _RULE.match(lines[i + 2]):
            sections.append(Section(_uncomment(lines[i + 1])))
            comment = []
            i += 3
            continue
        if line.startswith("#"):
            comment.append(_uncomment(line))
        elif not line.strip():
            comment = []
        elif matched := _KEY.match(line):
            if not sections:
                sections.append(Section("Settings"))
            text_lines, facts = _split_facts(comment)
            sections[-1].keys.append(
                Key(matched.group(1), matched.group(2).strip(), text_lines, facts)
            )
            comment = []
        i += 1
    return header, sections


def render(header: list[str], sections: list[Section]) -> str:
    out = [
        ".. This file is generated from config.yaml by docs/gen_configuration.py;",
        "   edit config.yaml and run the script instead of editing this file.",
        "",
        "=============",
        "Configuration",
        "=============",
        "",
        "Every setting has a default; ``config.yaml`` (or the file named by",
        "``RIG_CONFIG``) overrides the defaults, and the environment variable of a",
        "key, the key in upper case, overrides the file. Most names are RIG's own,",
        "so a RIG deployment's environment works unchanged (see :doc:`migration`).",
        "A bad value stops start-up with one line naming the key.",
        "",
        "The introduction of ``config.yaml`` itself::",
        "",
        *[f"    {line}".rstrip() for line in _trim(header)],
        "",
    ]
    for section in sections:
        out += [section.title, "=" * len(section.title), ""]
        for key in section.keys:
            env = _env(key)
            title = f"``{key.name}``" + (f" (``{env}``)" if env else "")
            out += [title, "-" * len(title), ""]
            paragraph = _escape(" ".join(key.text).strip())
            if paragraph:
                out += [_wrap(paragraph), ""]
            facts = _escape(" ".join(key.facts).strip())
            if facts:
                out += [_wrap(facts), ""]
            out += [f"In ``config.yaml``: ``{key.name}: {key.value}``", ""]
    return "\n".join(out).rstrip() + "\n"


def generate(config: Path = CONFIG) -> str:
    return render(*parse(config.read_text(encoding="utf-8")))


# -- helpers ----------------------------------------------------------------------------


def _uncomment(line: str) -> str:
    return line[2:] if line.startswith("# ") else line.lstrip("#")


def _split_facts(comment: list[str]) -> tuple[list[str], list[str]]:
    for index, line in enumerate(comment):
        if line.startswith("Type:"):
            return comment[:index], comment[index:]
    return comment, []


def _env(key: Key) -> str | None:
    matched = re.search(r"Env: ([A-Z][A-Z0-9_]*)", " ".join(key.facts))
    return matched.group(1) if matched else None


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _escape(text: str) -> str:
    """Plain comment text as reStructuredText: no accidental markup."""
    text = text.replace("\\", "\\\\")
    for char in "*`|":
        text = text.replace(char, "\\" + char)
    # "name_" followed by a space or punctuation would be a hyperlink reference.
    return re.sub(r"(\w)_(?=\W|$)", r"\1\\_", text)


def _wrap(text: str, width: int = 88) -> str:
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return "\n".join(lines)


def main() -> int:
    OUTPUT.write_text(generate(), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
