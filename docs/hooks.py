"""MkDocs hooks: the command-line and configuration references are generated from the code.

``<!-- generated: cli -->`` becomes every command's ``--help`` (the argparse parser itself) and
``<!-- generated: fields -->`` a table per config section (the pydantic schema: each field's type,
default and its attribute docstring), so these pages cannot drift from what the program accepts.
"""

from __future__ import annotations

import argparse
from typing import Any

CLI_MARK = "<!-- generated: cli -->"
FIELDS_MARK = "<!-- generated: fields -->"


def _cli() -> str:
    from ofasearch.cli import build_parser

    parser = build_parser()
    parts = ["```text", parser.format_help().rstrip(), "```"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        parts += [f"\n## `ofasearch {name}`\n", "```text", command.format_help().rstrip(), "```"]
    return "\n".join(parts)


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("NoneType", "None").replace("|", "\\|")


def _section(title: str, model: Any) -> str:
    rows = [f"\n## `{title}`\n", (model.__doc__ or "").strip().replace("\n", " ") + "\n"]
    rows += ["| field | type | default | what it is |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        text = (field.description or "").replace("\n", " ").replace("|", "\\|")
        rows.append(f"| `{name}` | `{_type_name(field.annotation)}` | `{default}` | {text} |")
    return "\n".join(rows)


def _fields() -> str:
    from ofasearch.config import schema

    sections = [
        ("data", schema.DataSpec),
        ("pairs[].teacher / pairs[].student", schema.ModelSpec),
        ("pairs[].teacher.recipe", schema.TeacherRecipe),
        ("pairs[]", schema.PairSpec),
        ("distill", schema.DistillSpec),
        ("optim", schema.OptimSpec),
        ("augment", schema.AugmentSpec),
        ("search", schema.SearchSettings),
        ("search.confirm", schema.ConfirmSettings),
        ("search.constraints", schema.Constraints),
        ("resources", schema.ResourcesSpec),
    ]
    return "\n".join(_section(title, model) for title, model in sections)


def on_page_markdown(markdown: str, **_kwargs: Any) -> str:
    if CLI_MARK in markdown:
        markdown = markdown.replace(CLI_MARK, _cli())
    if FIELDS_MARK in markdown:
        markdown = markdown.replace(FIELDS_MARK, _fields())
    return markdown
