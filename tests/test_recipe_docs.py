"""docs/recipes.md is checked against the schema and the registry, so it cannot drift.

To refresh the generated tables: python tests/test_recipe_docs.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import mlrun  # noqa: E402
from mlrun.components import BUILTIN_KINDS  # noqa: E402
from mlrun.params import format_value, parameters  # noqa: E402
from mlrun.recipe import TRAIN_SECTION  # noqa: E402
from mlrun.settings import train_reference  # noqa: E402

from conftest import REPO  # noqa: E402

DOC = REPO / "docs" / "recipes.md"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def train_table() -> str:
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{k}` | {cell(t)} | `{d}` | {cell(m)} |" for k, t, d, m in train_reference()]
    return "\n".join(lines)


def components_table() -> str:
    registry = mlrun.default_registry(autoload=False)  # built-ins only: the page documents those
    lines = ["| kind | name | parameters (type, default) |", "| --- | --- | --- |"]
    for entry in registry:
        params = "; ".join(
            f"`{p.name}`: {cell(p.type_text)}" + ("" if p.required else f", `{format_value(p.default)}`")
            for p in parameters(entry.component)
        )
        lines.append(f"| {entry.component.kind} | `{entry.component.name}` | {params or '—'} |")
    return "\n".join(lines)


GENERATED = {"train-table": train_table, "components-table": components_table}


def generated_block(name: str, text: str) -> str:
    found = re.search(rf"<!-- {name} -->\n(.*?)<!-- /{name} -->", text, flags=re.S)
    assert found, f"docs/recipes.md lacks the <!-- {name} --> block"
    return found.group(1)


def test_train_settings_and_components_match_the_docs() -> None:
    text = DOC.read_text()
    for name, render in GENERATED.items():
        assert generated_block(name, text) == render() + "\n", f"{name} is stale: run python tests/test_recipe_docs.py"


def test_every_section_is_documented() -> None:
    text = DOC.read_text()
    for section in [*(cls.section for cls in BUILTIN_KINDS), TRAIN_SECTION]:
        assert f"## `{section}`" in text or f"## `[{section}]`" in text or f"## `[[{section}]]`" in text, section


if __name__ == "__main__":
    text = DOC.read_text()
    for name, render in GENERATED.items():
        text = re.sub(
            rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)",
            lambda m: m.group(1) + render() + "\n" + m.group(2),
            text,
            flags=re.S,
        )
    DOC.write_text(text)
    print(f"updated {DOC}")
