"""The pluggy hooks a hostpanel plugin may implement (entry-point group ``panel``).

A plugin module marks its functions with ``panel.hookimpl``. Each hook has a one-line docstring;
``tests/test_hooks.py`` fails when a hook here is undocumented or untested (datasette's habit).
"""
import pluggy

hookspec = pluggy.HookspecMarker("panel")
hookimpl = pluggy.HookimplMarker("panel")


@hookspec
def register_backends(register):
    """Call ``register(BackendSubclass)`` for each backend this plugin provides."""


@hookspec
def register_blueprints(register):
    """Call ``register(blueprint, url_prefix=None)`` to add Flask blueprints to the panel."""


@hookspec
def register_commands(cli):
    """Add click commands or groups to the ``panel`` command group ``cli``."""


@hookspec
def service_status_changed(service, old, new):
    """Called after a service's status changed from ``old`` to ``new`` (``service`` is a ServiceSnapshot)."""


@hookspec
def usage_sampled(service, metrics, at):
    """Called in the sampler's transaction per usage sample of an active ``service`` (``metrics``: its Metric values, ``at``: aware UTC); flush only."""


@hookspec
def client_area_sections(service, spec):
    """Return a list of extra client-area sections (``panel.backends.Connect``, ``HowTo``...) for ``service`` (a ServiceSnapshot; ``spec`` is its ServiceSpec)."""


@hookspec
def service_actions(service, spec):
    """Return a list of extra ``panel.backends.Action``s, each with a ``handler(spec, params)``, offered on ``service``."""


@hookspec
def doctor_checks():
    """Return a list of ``panel.doctor.Check``s that ``panel doctor`` runs (e.g. a backend's nodes, engine or CRD)."""
