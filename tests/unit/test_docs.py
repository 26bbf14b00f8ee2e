"""The documentation is complete and well-formed.

- ``docs/configuration.rst`` is what ``docs/gen_configuration.py`` makes of
  ``config.yaml`` (so every key is documented, with its current text);
- ``docs/openapi-internal.yaml`` is valid OpenAPI 3 and lists every route
  (and method) of the internal Flask app;
- every page parses as reStructuredText without a warning, is in the index,
  and the README points at the docs and the demo.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from docutils import nodes, utils
from docutils.core import publish_doctree
from docutils.parsers.rst import Directive, directives, roles

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_configuration", DOCS / "gen_configuration.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_configuration_page_is_generated_from_config_yaml() -> None:
    expected = _generator().generate(ROOT / "config.yaml")
    actual = (DOCS / "configuration.rst").read_text(encoding="utf-8")
    assert actual == expected, (
        "docs/configuration.rst is out of date with config.yaml: "
        "run `python docs/gen_configuration.py`"
    )


def test_every_setting_is_documented() -> None:
    from rig_actors.config import Settings

    page = (DOCS / "configuration.rst").read_text(encoding="utf-8")
    keys = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    fields = {f for f in Settings.__dataclass_fields__}
    for key in set(keys) | fields:
        assert f"\n``{key}``" in page, f"{key} is not documented in docs/configuration.rst"


def _internal_routes() -> dict[str, set[str]]:
    """``{path with {} for parameters: methods}`` of the internal Flask app."""
    from rig_actors.config import Settings
    from rig_actors.gateway import Gateway
    from rig_actors.web.internal import create_internal_app

    app = create_internal_app(Gateway(Settings()))
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue  # Flask's built-in static route; the internal API has no files
        path = re.sub(r"<[^>]+>", "{}", rule.rule)
        methods = {m.lower() for m in rule.methods or ()} - {"head"}
        routes.setdefault(path, set()).update(methods)
    return routes


def _openapi() -> dict[str, Any]:
    return yaml.safe_load((DOCS / "openapi-internal.yaml").read_text(encoding="utf-8"))


def test_openapi_file_is_valid() -> None:
    from openapi_spec_validator import validate

    spec = _openapi()
    assert spec["openapi"].startswith("3.")
    validate(spec)


def test_every_internal_route_is_in_the_openapi_file() -> None:
    documented: dict[str, set[str]] = {}
    for path, item in _openapi()["paths"].items():
        documented[re.sub(r"\{[^}]+\}", "{}", path)] = set(item) - {"parameters"}
    missing = []
    for path, methods in sorted(_internal_routes().items()):
        if path not in documented:
            missing.append(path)
            continue
        # OPTIONS is answered by Flask for every route; only explicit ones need documenting.
        for method in sorted(methods - {"options"}):
            if method not in documented[path]:
                missing.append(f"{method.upper()} {path}")
    assert not missing, f"not in docs/openapi-internal.yaml: {missing}"


class _Toctree(Directive):
    """Sphinx's toctree, for plain docutils: its entries are checked separately."""

    has_content = True
    optional_arguments = 0
    option_spec = {"maxdepth": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        return []


def _doc_role(
    name: str,
    rawtext: str,
    text: str,
    lineno: int,
    inliner: Any,
    options: Any = None,
    content: Any = None,
) -> tuple[list[nodes.Node], list[nodes.system_message]]:
    target = utils.unescape(text)
    if not (DOCS / f"{target}.rst").exists():
        message = inliner.reporter.error(f":doc: target {target!r} does not exist", line=lineno)
        return [], [message]
    return [nodes.literal(rawtext, target)], []


def _pages() -> list[Path]:
    return [*sorted(DOCS.glob("*.rst")), ROOT / "README.rst"]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_page_is_well_formed_restructuredtext(page: Path) -> None:
    directives.register_directive("toctree", _Toctree)
    roles.register_local_role("doc", _doc_role)
    publish_doctree(
        page.read_text(encoding="utf-8"),
        source_path=str(page),
        settings_overrides={"report_level": 2, "halt_level": 2, "warning_stream": False},
    )


def test_every_page_is_in_the_index_and_the_readme_points_at_the_docs() -> None:
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    toctree = index.split(".. toctree::", 1)[1].split("\n\n", 2)[1]
    listed = {line.strip() for line in toctree.splitlines() if line.strip()}
    pages = {p.stem for p in DOCS.glob("*.rst")} - {"index"}
    assert pages <= listed, f"not in the docs/index.rst toctree: {pages - listed}"
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    for page in (
        "quickstart",
        "configuration",
        "http-api",
        "observability",
        "deployment",
        "migration",
    ):
        assert f"docs/{page}.rst" in readme, page
    assert "http://localhost:4000/_rig/demo" in readme
    assert "docs/openapi-internal.yaml" in readme
