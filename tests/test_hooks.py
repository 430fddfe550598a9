"""Every hook is documented and exercised (datasette's habit)."""
import inspect
import pathlib

from panel import hookspecs

HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if hasattr(fn, "panel_spec")]
TESTS = "\n".join(p.read_text() for p in pathlib.Path(__file__).parent.rglob("test_*.py"))


def test_hooks_exist():
    assert set(HOOKS) == {"register_backends", "register_blueprints", "register_commands", "service_status_changed",
                          "client_area_sections", "service_actions", "usage_sampled",
                          "doctor_checks"}


def test_every_hook_has_a_one_line_docstring():
    for name in HOOKS:
        doc = getattr(hookspecs, name).__doc__
        assert doc and len(doc.strip().splitlines()) == 1, name


def test_every_hook_is_tested():
    for name in HOOKS:
        assert f"def {name}(" in TESTS.replace(f"def {name}(self", f"def {name}("), f"no test implements {name}"


def test_register_blueprints_and_commands(make_app):
    import click
    from flask import Blueprint

    from panel import hookimpl

    bp = Blueprint("extra", __name__)

    @bp.get("/extra/ping")
    def ping():
        return "pong"

    class Extra:
        @hookimpl
        def register_blueprints(self, register):
            register(bp)

        @hookimpl
        def register_commands(self, cli):
            @cli.command("hello-extra")
            def hello():
                click.echo("hi from a plugin")

    from memory_backend import MemoryPlugin

    plugin = Extra()
    app = make_app(EXTRA_PLUGINS=[MemoryPlugin(), plugin])
    assert app.test_client().get("/extra/ping").get_data(as_text=True) == "pong"
    group = click.Group()
    app.extensions["panel"].pm.hook.register_commands(cli=group)
    result = app.test_cli_runner().invoke(group, ["hello-extra"])
    assert result.output.strip() == "hi from a plugin"


def test_a_bad_registration_is_refused(make_app):
    import pytest

    from panel import hookimpl

    class Bad:
        @hookimpl
        def register_backends(self, register):
            register(object)

    with pytest.raises(TypeError, match="not a named Backend subclass"):
        make_app(EXTRA_PLUGINS=[Bad()])


def test_safe_mode_loads_no_entry_point_plugins(make_app):
    app = make_app(create_tables=False, SAFE_MODE=True, PLUGINS=None, EXTRA_PLUGINS=[])
    assert app.extensions["panel"].backends == {}


def test_the_core_imports_no_plugin():
    """First-party backends are plugins like any third party's: the core never imports one."""
    import re

    root = pathlib.Path(__file__).parent.parent / "panel"
    plugin_packages = sorted(p.name for p in (root.parent / "plugins").glob("*/panel_*"))
    assert plugin_packages, "expected the first-party plugin packages under plugins/"
    pattern = re.compile(r"^\s*(from|import)\s+(" + "|".join(plugin_packages) + r")\b", re.M)
    offenders = [str(f.relative_to(root.parent)) for f in root.rglob("*.py") if pattern.search(f.read_text())]
    assert offenders == []
