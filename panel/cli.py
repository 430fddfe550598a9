"""The ``panel`` command: a Flask ``FlaskGroup`` over ``create_app``.

``panel db upgrade`` (Flask-Migrate), ``panel users|tokens|plans|plugins ...``, ``panel worker``,
``panel sweep``, ``panel reconcile NAME [--fix | --adopt]``, ``panel doctor``, ``panel domains check``, plus
whatever plugins add through ``register_commands``.
"""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from panel.backends import MASK, BackendError, ValidationError, schema_fields


def _create_app():
    from panel import create_app

    return create_app()


def _add_plugin_commands(group: click.Group) -> Exception | None:
    """Let plugins add commands (they need the app's plugin manager, so build one app).

    Returns the error that prevented it (reported if the command asked for is not found)."""
    try:
        app = _create_app()
    except Exception as exc:  # a broken config is reported when a command actually runs
        return exc
    app.extensions["panel"].pm.hook.register_commands(cli=group)
    return None


class PanelGroup(FlaskGroup):
    """The ``panel`` FlaskGroup; plugin commands (``register_commands``) are added on first lookup."""
    def __init__(self, **kwargs):
        super().__init__(create_app=_create_app, **kwargs)
        self._plugins_loaded = False
        self._plugin_error: Exception | None = None

    def _load_plugins(self):
        if not self._plugins_loaded:
            self._plugins_loaded = True
            self._plugin_error = _add_plugin_commands(self)

    def get_command(self, ctx, name):
        """Find a command, loading plugin commands if it is not a core one. ``db`` is
        Flask-Migrate's group, imported only here (the web app does not load alembic)."""
        if name == "db":
            from flask_migrate.cli import db as migrate_db

            return migrate_db
        command = super().get_command(ctx, name)
        if command is None:
            self._load_plugins()
            command = super().get_command(ctx, name)
        if command is None and self._plugin_error is not None:
            raise click.ClickException(f"no command {name!r}; plugin commands could not be loaded "
                                       f"because the app failed to start: {self._plugin_error}")
        return command

    def list_commands(self, ctx):
        """Core and plugin commands."""
        self._load_plugins()
        return sorted({"db", *super().list_commands(ctx)})


cli = PanelGroup(help="hostpanel: sell hosted services and run them.")


def main():
    """Console-script entry point."""
    from panel.config import ConfigError

    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        cli.main(prog_name="panel")
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)
    except (OperationalError, ProgrammingError) as exc:
        click.echo(f"error: {database_problem(exc)}", err=True)
        sys.exit(2)


def database_problem(exc: Exception) -> str:
    """One line for a database error a command hit: a schema that is missing or older than the code
    (run ``panel db upgrade``), or a database that cannot be reached. No SQL, no credentials."""
    text = str(getattr(exc, "orig", exc)).lower()
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return "the database has no panel tables yet: run `panel db upgrade` first"
    if "no such column" in text or ("column" in text and "does not exist" in text):
        return "the database schema is older than this version of hostpanel: run `panel db upgrade`"
    return f"cannot use the database at PANEL_DATABASE_URL ({type(getattr(exc, 'orig', exc)).__name__}): " \
           "check that it runs and that the URL is right"


# --------------------------------------------------------------------------- users & tokens

@cli.group()
def users():
    """Manage panel accounts."""


@users.command("create")
@click.argument("email")
@click.option("--password", help="Password (prompted if omitted).")
@click.option("--operator", is_flag=True, help="Give the operator role.")
@with_appcontext
def users_create(email, password, operator):
    """Create an account (or update its password and role)."""
    from panel import audit
    from panel.extensions import db
    from panel.models import User
    from panel.models.base import utcnow
    from panel.models.users import MIN_PASSWORD_LENGTH, InvalidEmail, validate_email

    try:
        email = validate_email(email)  # the one email rule: what the login form accepts
    except InvalidEmail as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from None
    if not password:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise click.BadParameter(f"use at least {MIN_PASSWORD_LENGTH} characters", param_hint="--password")
    user = User.by_email(email)
    created = user is None
    before = None if created else {"role": user.role}
    if created:
        user = User(email=email, email_verified_at=utcnow())  # an operator vouches for the address
        db.session.add(user)
    user.set_password(password)
    user.role = "operator" if operator else (user.role if not created else "customer")
    if not created:
        from panel.auth.sessions import revoke_all

        revoke_all(user)  # a new password ends the account's sessions
    db.session.flush()
    audit.record("cli", "user.create" if created else "user.update", user, before=before,
                 after={"email": user.email, "role": user.role, "password": "changed"})
    db.session.commit()
    click.echo(f"{'created' if created else 'updated'} {user.role} {user.email} (id {user.id})")


@cli.group()
def tokens():
    """Manage personal API tokens."""


@tokens.command("create")
@click.argument("email")
@click.option("--name", default="cli", help="A label for the token.")
@with_appcontext
def tokens_create(email, name):
    """Print a new bearer token for EMAIL (shown once)."""
    from panel.extensions import db
    from panel.models import ApiToken, User

    user = User.by_email(email)
    if user is None:
        raise click.ClickException(f"no user {email}")
    from panel import audit

    token, plain = ApiToken.issue(user, name)
    db.session.flush()
    audit.record("cli", "token.create", ("user", user.id), after={"name": name, "prefix": token.prefix})
    db.session.commit()
    click.echo(plain)


# --------------------------------------------------------------------------- plans

@cli.group()
def plans():
    """Manage the plan catalog."""


@plans.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@with_appcontext
def plans_import(path):
    """Upsert the plans of a catalog YAML file by slug (all or nothing)."""
    from panel.catalog import CatalogError, import_catalog

    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        report = import_catalog(text)
    except CatalogError as exc:
        for line in exc.errors:
            click.echo(f"error: {line}", err=True)
        raise click.ClickException(f"{path}: {len(exc.errors)} error(s); nothing imported")
    for line in report.warnings:
        click.echo(f"warning: {line}", err=True)
    from panel import audit

    audit.record_catalog_import("cli", report, source=path)
    click.echo(f"created {len(report.created)}, updated {len(report.updated)}, "
               f"unchanged {len(report.unchanged)}")


@plans.command("list")
@with_appcontext
def plans_list():
    """List plans."""
    from panel.extensions import db
    from panel.models import Plan

    for plan in db.session.scalars(db.select(Plan).order_by(Plan.sort_order, Plan.id)):
        price = ",".join(f"{t}:{p}" for t, p in plan.term_prices.items()) or "free"
        click.echo(f"{plan.slug:24} {plan.backend:14} {price:28} {'active' if plan.active else 'inactive'}  {plan.name}")


# --------------------------------------------------------------------------- plugins

@cli.group("plugins")
def plugins_group():
    """Inspect and configure backend plugins."""


PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


@plugins_group.command("new", with_appcontext=False)
@click.argument("name")
@click.option("--dest", type=click.Path(file_okay=False), default=None,
              help="Folder to create (default: ./hostpanel-NAME).")
@click.option("--label", default=None, help='A human name, e.g. "Notes hosting".')
def plugins_new(name, dest, label):
    """Scaffold a backend plugin distribution NAME (copier): pyproject with the entry point, a
    Backend subclass whose methods raise NotSupportedError, a README, a loopback stand-in and
    tests using panel.testing."""
    from panel.scaffold import scaffold_plugin

    if not PLUGIN_NAME.fullmatch(name):
        raise click.BadParameter("lower-case letters, digits and _, starting with a letter (at most 40)",
                                 param_hint="NAME")
    target = Path(dest or f"hostpanel-{name.replace('_', '-')}")
    if target.exists() and any(target.iterdir()):
        raise click.ClickException(f"{target} exists and is not empty")
    scaffold_plugin(name, target, label=label)
    click.echo(f"created {target}: cd {target} && pip install -e '.[test]' && pytest")


@plugins_group.command("list")
@with_appcontext
def plugins_list():
    """List installed backends, whether enabled, their settings (secrets masked) and the billable
    metrics a plan may price (``Backend.billable_metrics``)."""
    from panel.plugins import is_enabled, plugins, raw_settings

    backends = plugins().backends
    if not backends:
        click.echo("no backend plugins installed")
    for name, cls in sorted(backends.items()):
        click.echo(f"{name} ({cls.label or cls.__name__}) {'enabled' if is_enabled(name) else 'disabled'}")
        values, source = raw_settings(name)
        for f in schema_fields(cls.Settings):
            value = values.get(f.name)
            shown = MASK if (f.secret and value not in (None, "")) else ("" if value is None else value)
            flag = " (required)" if f.required and value in (None, "") else ""
            click.echo(f"  {f.name} = {shown} [{source.get(f.name, 'unset')}]{flag}")
        metrics = getattr(cls, "billable_metrics", {}) or {}
        if metrics:  # what a plan's metered: block may price
            click.echo("  billable metrics: " + ", ".join(f"{m.name} ({m.unit}, {m.aggregate})"
                                                         for m in metrics.values()))


@plugins_group.command("set")
@click.argument("name")
@click.argument("key")
@click.argument("value")
@with_appcontext
def plugins_set(name, key, value):
    """Store setting KEY of plugin NAME (secrets are encrypted at rest)."""
    from panel.plugins import BackendNotConfigured, set_setting

    from panel import audit

    try:
        set_setting(name, key, value)
    except (ValidationError, BackendNotConfigured) as exc:
        raise click.ClickException(str(exc))
    audit.record_setting("cli", name, key, value)
    click.echo(f"{name}.{key} set")


@plugins_group.command("unset")
@click.argument("name")
@click.argument("key")
@with_appcontext
def plugins_unset(name, key):
    """Remove a stored setting (the default or environment value applies again)."""
    from panel.plugins import unset_setting

    from panel import audit

    removed = unset_setting(name, key)
    if removed:
        audit.record_setting("cli", name, key, None)
    click.echo(f"{name}.{key} {'removed' if removed else 'was not set'}")


@plugins_group.command("enable")
@click.argument("name")
@with_appcontext
def plugins_enable(name):
    """Let customers order plans of backend NAME."""
    from panel.plugins import BackendNotConfigured, set_enabled

    from panel import audit

    try:
        set_enabled(name, True)
    except BackendNotConfigured as exc:
        raise click.ClickException(str(exc))
    audit.record("cli", "plugin.enable", ("plugin", name), after={"enabled": True})
    audit.commit()
    click.echo(f"{name} enabled")


@plugins_group.command("disable")
@click.argument("name")
@with_appcontext
def plugins_disable(name):
    """Stop new orders for backend NAME (running services are untouched)."""
    from panel.plugins import BackendNotConfigured, set_enabled

    from panel import audit

    try:
        set_enabled(name, False)
    except BackendNotConfigured as exc:
        raise click.ClickException(str(exc))
    audit.record("cli", "plugin.disable", ("plugin", name), after={"enabled": False})
    audit.commit()
    click.echo(f"{name} disabled")


@plugins_group.command("test")
@click.argument("name")
@with_appcontext
def plugins_test(name):
    """Check plugin NAME's settings against its remote system."""
    from panel.plugins import get_backend

    try:
        click.echo(get_backend(name).test_connection())
    except BackendError as exc:
        raise click.ClickException(f"{name}: {exc}")


# --------------------------------------------------------------------------- jobs

@cli.command()
@click.option("--burst", is_flag=True, help="Sweep once, run what is queued, exit when the queue is empty.")
@click.option("--sweep-interval", type=float, default=None,
              help="Seconds between sweeps (default PANEL_SWEEP_INTERVAL; 0: no sweeps).")
@click.option("--threads", type=click.IntRange(1, 256), default=None,
              help="Jobs run at once by this process (default PANEL_WORKER_THREADS, 4).")
@with_appcontext
def worker(burst, sweep_interval, threads):
    """Run jobs from the panel queue (needs PANEL_REDIS_URL); survives Redis and database restarts.

    Runs up to --threads jobs at once in this one process. Also sweeps every PANEL_SWEEP_INTERVAL
    seconds (work that is due or whose worker died is handed over again) and runs the periodic
    tasks (billing cron, usage samples)."""
    from panel import dispatch

    if not current_app.config.get("REDIS_URL"):
        raise click.ClickException("PANEL_REDIS_URL is not set: without Redis, jobs run in-process "
                                   "inside the web app and no worker is needed")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dispatch.run_worker(current_app._get_current_object(), burst=burst, sweep_interval=sweep_interval,
                        threads=threads)


@cli.command()
@with_appcontext
def sweep():
    """Hand over work that is due or whose lease expired (workers do this every few seconds)."""
    from panel import dispatch

    from panel import audit

    done = dispatch.sweep()
    audit.record("cli", "jobs.sweep", None, after={"handed_over": done})
    audit.commit()
    click.echo(f"handed over {len(done)} item(s){': ' + ', '.join(done) if done else ''}")
    if not current_app.config.get("REDIS_URL"):
        dispatch.inprocess_runner().wait_idle(300)


@cli.command()
@with_appcontext
def recount():
    """Rebuild the service counts per plan and status (service_counts) from the services table."""
    from panel import audit, counts

    rows = counts.recount()
    audit.record("cli", "services.recount", None, after={"rows": rows})
    audit.commit()
    click.echo(f"service counts rebuilt: {rows} (plan, status) row(s)")


@cli.command("sample-usage")
@with_appcontext
def sample_usage_command():
    """Record a usage sample of every active service now (workers do it every PANEL_USAGE_INTERVAL)."""
    from panel import jobs

    click.echo(f"recorded {jobs.sample_usage()} usage sample(s)")


@cli.group()
def domains():
    """Customers' own hostnames and their DNS TXT verification."""


@domains.command("check")
@with_appcontext
def domains_check():
    """Look up the TXT record of every pending hostname now (workers do it every PANEL_DOMAIN_CHECK_INTERVAL)."""
    from panel import names

    click.echo(f"{names.check_pending()} hostname(s) verified")


@cli.command()
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@with_appcontext
def doctor(strict):
    """Run every check of this panel and print each problem with its fix (exit 1 when something is
    wrong: run it in a deploy pipeline)."""
    from panel import doctor as checks

    report = checks.run()
    for line in report.lines():
        click.echo(line)
    if report.errors or (strict and report.warnings):
        sys.exit(1)


@cli.command()
@click.argument("name")
@click.option("--fix", is_flag=True, help="Fix what can be fixed (re-suspend, mark missing or failed ones as failed).")
@click.option("--adopt", "adopt_", is_flag=True,
              help="Make service records for remote objects no service accounts for (seed 002's backfill).")
@click.option("--plan", "plan_slug", default=None, help="With --adopt: the plan of every adopted object "
                                                       "(default: the plan whose options match its resources).")
@click.option("--mapping", type=click.Path(exists=True, dir_okay=False), default=None,
              help="With --adopt: a CSV file remote,email[,plan] naming each object's customer (and plan).")
@with_appcontext
def reconcile(name, fix, adopt_, plan_slug, mapping):
    """Compare backend NAME's remote objects with our records and report drift; with --adopt, make
    records for what runs without one. Exit 1 when drift is left or an object was skipped."""
    from panel import audit
    from panel.reconcile import MappingError, adopt, load_mapping
    from panel.reconcile import reconcile as run

    if (plan_slug or mapping) and not adopt_:
        raise click.UsageError("--plan and --mapping go with --adopt")
    if adopt_:
        try:
            rows = load_mapping(Path(mapping).read_text(encoding="utf-8")) if mapping else None
            report = adopt(name, actor="cli", plan_slug=plan_slug, mapping=rows)
        except MappingError as exc:
            raise click.BadParameter(str(exc), param_hint="--mapping")
        except LookupError as exc:
            raise click.BadParameter(str(exc), param_hint="--plan")
        except BackendError as exc:
            raise click.ClickException(f"{name}: {exc}")
        audit.record("cli", "reconcile.adopt", ("plugin", name),
                     after={"examined": report.examined, "adopted": [sid for _, sid in report.adopted],
                            "events": report.events, "skipped": len(report.skipped)},
                     detail="\n".join(report.lines())[:2000])
        audit.commit()
        for line in report.lines():
            click.echo(line)
        if report.skipped:
            sys.exit(1)
        return
    try:
        report = run(name, fix=fix)
    except BackendError as exc:
        raise click.ClickException(f"{name}: {exc}")
    if fix:
        audit.record("cli", "reconcile.fix", ("plugin", name), detail="\n".join(report.lines())[:2000])
        audit.commit()
    for line in report.lines():
        click.echo(line)
    if report.drift and not fix:
        sys.exit(1)


if __name__ == "__main__":
    main()
