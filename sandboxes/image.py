"""Build the offline container image for the ``docker`` backend from this machine's Python.

No registry is needed: the image is a root filesystem made of one host interpreter (its
binary, its standard library and the shared libraries ``ldd`` lists), a ``nobody`` user and a
``/work`` directory owned by that user (Podman ignores tmpfs ``mode=``), imported with
``podman import`` / ``docker import``. Users with a registry can pass any Python image to
``make_sandbox("docker", image=...)`` instead.

CLI: ``rao-envs sandbox-build-image`` or ``python -m rao_envs.sandboxes.image --tag TAG``.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from typing import Iterable, Optional

DEFAULT_IMAGE = "localhost/rao-envs-sandbox:latest"
SANDBOX_UID = 65534

_SKIP_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages",
              "dist-packages", "config-3.11-x86_64-linux-gnu"}


def default_image() -> str:
    """``$RAO_SANDBOX_IMAGE`` or :data:`DEFAULT_IMAGE`."""
    return os.environ.get("RAO_SANDBOX_IMAGE") or DEFAULT_IMAGE


def _ldd(paths: Iterable[str]) -> set:
    libs: set = set()
    for p in paths:
        try:
            out = subprocess.run(["ldd", p], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for m in re.finditer(r"(/\S+\.so[^\s]*)", out):
            if os.path.exists(m.group(1)):
                libs.add(m.group(1))
    return libs


def _python_info(python: str) -> tuple:
    code = "import sys, sysconfig; print(sys.base_prefix); print(sysconfig.get_paths()['stdlib'])"
    out = subprocess.run([python, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60, check=True)
    prefix, stdlib = out.stdout.split()
    return os.path.realpath(prefix), os.path.realpath(stdlib)


def rootfs_tar(python: str = "/usr/bin/python3") -> bytes:
    """A tar (bytes) of the minimal root filesystem running ``python``."""
    real = os.path.realpath(shutil.which(python) or python)
    prefix, stdlib = _python_info(real)
    tar_buf = io.BytesIO()
    added: set = set()

    with tarfile.open(fileobj=tar_buf, mode="w") as tar:
        def add_dir(path: str, uid: int = 0, mode: int = 0o755) -> None:
            if path in added or path == "/":
                return
            add_dir(os.path.dirname(path))
            ti = tarfile.TarInfo(path.lstrip("/"))
            ti.type = tarfile.DIRTYPE
            ti.mode = mode
            ti.uid = ti.gid = uid
            ti.mtime = int(time.time())
            tar.addfile(ti)
            added.add(path)

        def add_file(path: str) -> None:
            if path in added:
                return
            add_dir(os.path.dirname(path))
            if os.path.islink(path):
                target = os.readlink(path)
                ti = tarfile.TarInfo(path.lstrip("/"))
                ti.type = tarfile.SYMTYPE
                ti.linkname = target
                tar.addfile(ti)
                added.add(path)
                resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
                if os.path.exists(resolved):
                    add_file(resolved)
                return
            ti = tar.gettarinfo(path, arcname=path.lstrip("/"))
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            with open(path, "rb") as f:
                tar.addfile(ti, f)
            added.add(path)

        def add_text(path: str, text: str, mode: int = 0o644) -> None:
            add_dir(os.path.dirname(path))
            data = text.encode()
            ti = tarfile.TarInfo(path.lstrip("/"))
            ti.size = len(data)
            ti.mode = mode
            ti.mtime = int(time.time())
            tar.addfile(ti, io.BytesIO(data))
            added.add(path)

        def add_symlink(path: str, target: str) -> None:
            if path in added:
                return
            ti = tarfile.TarInfo(path.lstrip("/"))
            ti.type = tarfile.SYMTYPE
            ti.linkname = target
            tar.addfile(ti)
            added.add(path)

        # merged-/usr layout like Debian's, so ldd's /lib paths resolve
        add_dir("/usr/lib")
        add_dir("/usr/bin")
        for name, target in (("/lib", "usr/lib"), ("/bin", "usr/bin"), ("/lib64", "usr/lib64")):
            if os.path.islink(name) or not os.path.exists(name):
                add_symlink(name, target)
        add_dir("/usr/lib64")

        sos = []
        for root, dirs, files in os.walk(stdlib):
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
            for fn in files:
                p = os.path.join(root, fn)
                if fn.endswith(".so"):
                    sos.append(p)
                add_file(p)
        add_file(real)
        for alias in ("/usr/bin/python3", "/usr/bin/python"):
            if alias != real:
                add_symlink(alias, real)
        for lib in sorted(_ldd([real] + sos)):
            # ldd reports /lib/... on merged-/usr hosts, where /lib -> usr/lib: store under /usr
            top = "/" + lib.split("/")[1]
            path = "/usr" + lib if top in ("/lib", "/lib64") and os.path.islink(top) else lib
            add_file(path if os.path.exists(path) else os.path.realpath(lib))
        add_text("/etc/passwd", f"root:x:0:0:root:/root:/bin/false\nnobody:x:{SANDBOX_UID}:{SANDBOX_UID}:nobody:/work:/bin/false\n")
        add_text("/etc/group", f"root:x:0:\nnogroup:x:{SANDBOX_UID}:\n")
        add_text("/etc/hostname", "sandbox\n")
        add_dir("/work", uid=SANDBOX_UID, mode=0o700)
        add_dir("/tmp", mode=0o1777)
        add_dir("/proc")
        add_dir("/dev")
        add_dir("/sys")
        add_dir("/root", mode=0o700)
    return tar_buf.getvalue()


def build_image(tag: Optional[str] = None, python: str = "/usr/bin/python3", engine: Optional[str] = None,
                quiet: bool = False) -> str:
    """Build and import the sandbox image; returns its tag.

    ``engine``: ``"podman"``, ``"docker"`` (the CLI) or ``"sdk"`` (Docker SDK against
    ``DOCKER_HOST``); default: whichever works first, in that order.
    """
    tag = tag or default_image()
    if not os.path.exists(python) and shutil.which(python) is None:
        python = sys.executable
    data = rootfs_tar(python)
    changes = ["USER 65534:65534", "WORKDIR /work", "ENV PATH=/usr/bin:/bin", "ENV HOME=/work",
               'CMD ["/usr/bin/python3"]']
    engines = [engine] if engine else ["podman", "docker", "sdk"]
    errors = []
    for eng in engines:
        if eng in ("podman", "docker"):
            exe = shutil.which(eng)
            if exe is None:
                errors.append(f"{eng}: not installed")
                continue
            argv = [exe, "import"]
            for c in changes:
                argv += ["--change", c]
            argv += ["-", tag]
            proc = subprocess.run(argv, input=data, capture_output=True, timeout=600)
            if proc.returncode == 0:
                if not quiet:
                    print(f"built {tag} ({len(data) / 1e6:.0f} MB rootfs) with {eng}")
                return tag
            errors.append(f"{eng}: {proc.stderr.decode(errors='replace').strip()[-300:]}")
        elif eng == "sdk":
            try:
                import docker  # noqa: PLC0415 - optional dependency

                client = docker.from_env(timeout=60)
                repo, _, tg = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
                client.api.import_image_from_data(data, repository=repo, tag=tg, changes=changes)
                if not quiet:
                    print(f"built {tag} with the Docker SDK")
                return tag
            except Exception as e:  # noqa: BLE001
                errors.append(f"sdk: {e}")
    raise RuntimeError("could not import the sandbox image: " + "; ".join(errors) +
                       ". Install Podman (`apt-get install podman runc`) or Docker.")


def main(argv: Optional[list] = None) -> int:
    """``python -m rao_envs.sandboxes.image [--tag T] [--python P] [--engine E]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", default=None, help=f"image tag (default {DEFAULT_IMAGE})")
    ap.add_argument("--python", default="/usr/bin/python3", help="host interpreter to package")
    ap.add_argument("--engine", default=None, choices=["podman", "docker", "sdk"])
    args = ap.parse_args(argv)
    try:
        build_image(args.tag, args.python, args.engine)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
