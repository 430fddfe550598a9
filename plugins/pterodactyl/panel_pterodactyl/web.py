"""The operator page ``/admin/pterodactyl/nodes``: live Pterodactyl nodes merged with our ``nodes``
setting, and a form per node to set its region, enabled flag and headroom (MiB).

Registered through the plugin's ``register_blueprints`` hook with ``url_prefix="/admin/pterodactyl"``.
Operators only (anyone else gets 404, the core's ``operator_required``). It shows the same data as
``panel pterodactyl nodes`` and stores the whole list with the core's ``set_setting``, so the
backend's :func:`~panel_pterodactyl.nodes.validate_nodes` is the only validator; its per-entry
errors (``nodes[2].region``) come back as messages under the matching form field.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, StringField, SubmitField
from wtforms.validators import Optional

from panel.admin.routes import operator_required
from panel.backends import BackendError, ValidationError
from panel.customer.forms import ActionForm

from panel_pterodactyl.client import NotFound
from panel_pterodactyl.nodes import NodeCapacity, validate_nodes

PLUGIN = "pterodactyl"
URL_PREFIX = "/admin/pterodactyl"
_FORM_KEYS = ("region", "enabled", "headroom_memory", "headroom_disk")

bp = Blueprint("pterodactyl_admin", __name__, template_folder="templates")


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


class NodeForm(FlaskForm):
    """One node's entry of the ``nodes`` setting. Values are checked by ``validate_nodes`` when
    stored (only the integer syntax is checked here); a blank headroom means 0.
    """

    region = StringField("Region", filters=[_strip], render_kw={"maxlength": 64, "placeholder": "us-east"},
                         description="Lower-case code, e.g. us-east (orders choose a region)")
    enabled = BooleanField("Enabled (new servers may be placed here)", default=True)
    headroom_memory = IntegerField("Headroom memory (MiB)", default=0, validators=[Optional()],
                                   render_kw={"inputmode": "numeric"},
                                   description="Memory kept free on top of what Pterodactyl allocates")
    headroom_disk = IntegerField("Headroom disk (MiB)", default=0, validators=[Optional()],
                                 render_kw={"inputmode": "numeric"},
                                 description="Disk kept free on top of what Pterodactyl allocates")
    submit = SubmitField("Save")

    def entry(self, node_id: int) -> dict:
        """The ``nodes`` entry these inputs describe (blank headroom = 0)."""
        return {"id": node_id, "region": self.region.data or "", "enabled": bool(self.enabled.data),
                "headroom_memory": 0 if self.headroom_memory.data is None else self.headroom_memory.data,
                "headroom_disk": 0 if self.headroom_disk.data is None else self.headroom_disk.data}


def _prefix(node_id: int) -> str:
    return f"node{node_id}"


def node_form(node_id: int, entry: Mapping[str, Any] | None = None, *, submitted: bool = False) -> NodeForm:
    """The form of node ``node_id``: bound to the request when ``submitted``, else filled from
    ``entry`` (our config of that node, or ``None`` for a node we do not sell on yet).
    """
    if submitted:
        return NodeForm(prefix=_prefix(node_id))
    data = {"region": "", "enabled": True, "headroom_memory": 0, "headroom_disk": 0}
    if entry:
        data.update({k: entry.get(k, data[k]) for k in _FORM_KEYS})
    return NodeForm(formdata=None, prefix=_prefix(node_id), data=data)


@dataclass
class StoredNodes:
    """The ``nodes`` setting as stored: ``entries`` (validated, or the raw list when invalid),
    ``error`` (why it is invalid), ``source`` (``db``, ``env``, ``default`` or ``unset``).
    """

    entries: list = field(default_factory=list)
    error: str | None = None
    source: str = "unset"
    valid: bool = True

    def find(self, node_id: int) -> int | None:
        """The index of node ``node_id`` in ``entries`` (``None`` when it is not configured)."""
        for i, entry in enumerate(self.entries):
            if isinstance(entry, Mapping) and entry.get("id") == node_id:
                return i
        return None


def stored_nodes() -> StoredNodes:
    """Read the ``nodes`` setting (env, database or default) without needing a configured backend."""
    from panel.plugins import raw_settings

    values, source = raw_settings(PLUGIN)
    raw = values.get("nodes")
    state = StoredNodes(source=source.get("nodes", "unset"))
    try:
        state.entries = validate_nodes(raw)
    except ValidationError as exc:
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raw = None
        state.entries = [dict(e) if isinstance(e, Mapping) else e for e in raw] if isinstance(raw, list) else []
        state.error = f"the stored nodes setting is invalid: {exc}"
        state.valid = False
    return state


def live_nodes() -> tuple[list[NodeCapacity] | None, str | None]:
    """(nodes, error): the panel's nodes merged with our config, or ``None`` and the reason
    (plugin not configured, panel unreachable, key refused, invalid ``nodes`` setting).
    """
    from panel.plugins import get_backend

    try:
        return get_backend(PLUGIN).live_nodes(with_location=True), None
    except BackendError as exc:
        return None, str(exc) or exc.__class__.__name__


def _rows(live: list[NodeCapacity] | None, stored: StoredNodes, forms: Mapping[int, NodeForm]) -> list[dict]:
    config = {e["id"]: e for e in stored.entries if isinstance(e, Mapping) and isinstance(e.get("id"), int)}
    rows = []
    if live is not None:
        for node in sorted(live, key=lambda n: n.id):
            entry = config.pop(node.id, None)
            rows.append({"id": node.id, "live": node, "config": entry, "missing": False,
                         "form": forms.get(node.id) or node_form(node.id, entry)})
    for node_id, entry in sorted(config.items()):
        rows.append({"id": node_id, "live": None, "config": entry, "missing": live is not None,
                     "form": forms.get(node_id) or node_form(node_id, entry)})
    return rows


def _render(forms: Mapping[int, NodeForm] | None = None, errors: Mapping[int, list[str]] | None = None):
    stored = stored_nodes()
    live, live_error = live_nodes()
    rows = _rows(live, stored, forms or {})
    return render_template("pterodactyl/nodes.html", rows=rows, live_error=live_error, stored=stored,
                           errors=errors or {},
                           nodes_json=json.dumps(stored.entries, indent=1, default=str))


@bp.route("/nodes")
@operator_required
def nodes():
    """GET /admin/pterodactyl/nodes: the live nodes (totals, over-allocation, allocated, headroom,
    free room) merged with our config, with a form per node. Errors from the API are shown on the
    page, never as a 500.
    """
    return _render()


def _env_refusal(stored: StoredNodes):
    if stored.source == "env":
        flash("The nodes setting comes from PANEL_PLUGIN_PTERODACTYL_NODES, which overrides what is "
              "stored here: change that variable instead.", "error")
        return redirect(url_for(".nodes"))
    return None


@bp.route("/nodes/<int:node_id>", methods=["POST"])
@operator_required
def save_node(node_id: int):
    """POST /admin/pterodactyl/nodes/<id>: set region, enabled and headroom of node ``id`` (added to
    the ``nodes`` setting if new), storing the whole list with ``set_setting``. Validation errors are
    shown under the form's fields; success flashes and redirects back.
    """
    from panel.plugins import get_backend, set_setting

    form = node_form(node_id, submitted=True)
    if not form.validate_on_submit():
        if "csrf_token" in form and form["csrf_token"].errors:
            abort(400)
        return _render(forms={node_id: form})
    stored = stored_nodes()
    refused = _env_refusal(stored)
    if refused:
        return refused
    entries = list(stored.entries)
    index = stored.find(node_id)
    if index is None:
        try:
            get_backend(PLUGIN).client.get_item(f"nodes/{node_id}")
        except NotFound:
            flash(f"Pterodactyl has no node {node_id}.", "error")
            return redirect(url_for(".nodes"))
        except BackendError as exc:
            flash(f"Could not check node {node_id} in Pterodactyl ({exc}); stored it anyway.", "info")
        index = len(entries)
        entries.append(form.entry(node_id))
    else:
        entries[index] = form.entry(node_id)
    try:
        saved = set_setting(PLUGIN, "nodes", entries)
    except ValidationError as exc:
        others = _apply_errors(form, exc.errors, index)
        return _render(forms={node_id: form}, errors={node_id: others})
    entry = next(n for n in saved if n["id"] == node_id)
    flash(f"Node {node_id} saved: region {entry['region']}, {'enabled' if entry['enabled'] else 'disabled'}, "
          f"headroom {entry['headroom_memory']} MiB memory / {entry['headroom_disk']} MiB disk.", "success")
    return redirect(url_for(".nodes") + f"#node-{node_id}")


def _apply_errors(form: NodeForm, errors: Mapping[str, str], index: int) -> list[str]:
    """Put ``nodes[index].<field>`` errors under ``form``'s fields; return the rest as text."""
    others = []
    for key, message in errors.items():
        name = key.removeprefix(f"nodes[{index}].")
        if name != key and name in _FORM_KEYS:
            form[name].errors = [*form[name].errors, message]
        else:
            others.append(f"{key} {message}")
    return others


@bp.route("/nodes/<int:node_id>/remove", methods=["POST"])
@operator_required
def remove_node(node_id: int):
    """POST /admin/pterodactyl/nodes/<id>/remove: drop node ``id`` from the ``nodes`` setting (no new
    servers are placed there; existing servers keep running).
    """
    from panel.plugins import set_setting

    if not ActionForm().validate_on_submit():
        abort(400)
    stored = stored_nodes()
    refused = _env_refusal(stored)
    if refused:
        return refused
    index = stored.find(node_id)
    if index is None:
        flash(f"Node {node_id} is not configured.", "error")
        return redirect(url_for(".nodes"))
    try:
        set_setting(PLUGIN, "nodes", [e for i, e in enumerate(stored.entries) if i != index])
    except ValidationError as exc:
        flash(f"Could not remove node {node_id}: {exc}", "error")
        return redirect(url_for(".nodes"))
    flash(f"Node {node_id} removed from our config; no new servers will be placed on it.", "success")
    return redirect(url_for(".nodes"))
