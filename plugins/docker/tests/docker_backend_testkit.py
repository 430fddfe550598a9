"""Helpers shared by the Docker backend's tests (a uniquely named module: every plugin has a conftest)."""
import io
import itertools
import tarfile
import uuid

#: This session's id; everything the tests make is named with PREFIX so cleanup can find it.
RUN_ID = uuid.uuid4().hex[:6]
PREFIX = f"hpt{RUN_ID}"
_spaces = itertools.count(1)


def new_space(stem: str = "s") -> str:
    """A space name unique in this session."""
    return f"{stem}{next(_spaces)}"


def build_standin_image(docker_client, busybox: str, repository: str) -> str:
    """Build the stand-in app image from a static ``busybox`` with ``docker import``; returns its tag.

    ``busybox httpd`` serves "App is running!" at ``/api/`` on ``$PORT``, and a CGI stand-in of
    Postiz's first-account registration at ``/cgi-bin/register`` keeps the body in
    ``/tmp/registered.json`` (a second registration answers 400, as Postiz does)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in ("bin", "www", "www/api", "www/cgi-bin", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755 if directory != "tmp" else 0o1777
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
        page = b"App is running!"
        info = tarfile.TarInfo("www/api/index.html")
        info.size, info.mode = len(page), 0o644
        tar.addfile(info, io.BytesIO(page))
        script = (b"#!/bin/sh\n"
                  b"if [ -e /tmp/registered.json ]; then\n"
                  b"  printf 'Status: 400 Bad Request\\r\\nContent-Type: text/plain\\r\\n\\r\\nUser already exists'\n"
                  b"  exit 0\nfi\n"
                  b"/bin/busybox head -c \"${CONTENT_LENGTH:-0}\" > /tmp/registered.json\n"
                  b"printf 'Content-Type: text/plain\\r\\n\\r\\n'\n")
        info = tarfile.TarInfo("www/cgi-bin/register")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    docker_client.api.import_image_from_data(
        buf.getvalue(), repository=repository, tag="latest",
        changes=['CMD ["/bin/busybox", "sh", "-c", "exec /bin/busybox httpd -f -p ${PORT:-5000} -h /www"]'])
    return f"{repository}:latest"


def static_busybox() -> str | None:
    """Path of a statically linked busybox (busybox-static), or ``None``."""
    import os
    import shutil
    import struct

    def is_static(path: str) -> bool:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head[:4] != b"\x7fELF":
                return False
            is64, little = head[4] == 2, head[5] == 1
            end = "<" if little else ">"
            if is64:
                phoff, = struct.unpack(end + "Q", head[32:40])
                phentsize, phnum = struct.unpack(end + "HH", head[54:58])
            else:
                phoff, = struct.unpack(end + "I", head[28:32])
                phentsize, phnum = struct.unpack(end + "HH", head[42:46])
            for i in range(phnum):
                fh.seek(phoff + i * phentsize)
                p_type, = struct.unpack(end + "I", fh.read(4))
                if p_type == 3:  # PT_INTERP
                    return False
        return True

    for candidate in ("/bin/busybox", shutil.which("busybox") or "", "/usr/bin/busybox"):
        if candidate and os.path.exists(candidate) and is_static(candidate):
            return candidate
    return None


def cleanup_docker(client, prefix: str) -> None:
    """Remove every container and volume whose name (or ``panel.service`` label) starts with ``prefix``."""
    import docker

    for container in client.containers.list(all=True):
        if container.name.startswith(prefix) or (container.labels or {}).get("panel.service", "").startswith(prefix):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
    for volume in client.volumes.list():
        if volume.name.startswith(prefix):
            try:
                volume.remove(force=True)
            except docker.errors.NotFound:
                pass


def cleanup_postgres(admin_url: str, prefix: str) -> None:
    """Drop every database and role whose name starts with ``prefix``."""
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,))
        for (name,) in cur.fetchall():
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,))
        for (name,) in cur.fetchall():
            cur.execute(f'DROP ROLE IF EXISTS "{name}"')
    conn.close()
