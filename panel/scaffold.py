"""``panel plugins new``: scaffold a backend plugin distribution from the template shipped in
``panel/plugin_template`` (rendered with copier, so it works after a non-editable install)."""
from __future__ import annotations

from pathlib import Path

TEMPLATE = Path(__file__).with_name("plugin_template")


def scaffold_plugin(name: str, dest: str | Path, *, label: str | None = None) -> Path:
    """Render the plugin template for backend ``name`` (lower case, ``[a-z][a-z0-9_]*``) into
    ``dest``; returns ``dest``.

    The result is a distribution ``hostpanel-<name>`` with package ``panel_<name>``: a pyproject
    with the ``panel`` entry point, ``<Name>Backend`` (every method raising
    ``NotSupportedError``), a README, a loopback stand-in (``standin.py``) and tests using
    ``panel.testing``. Raises ``ValueError`` for a bad name; copier's errors otherwise.
    """
    import copier

    if not name or not name.isidentifier() or name != name.lower():
        raise ValueError(f"plugin name {name!r} must be lower case letters, digits and _")
    data = {"name": name}
    if label:
        data["label"] = label
    copier.run_copy(str(TEMPLATE), str(dest), data=data, defaults=True, quiet=True, unsafe=False,
                    overwrite=False)
    return Path(dest)
