#!/usr/bin/env bash
# Build ramanscreen's per-stage OCI images with podman, from the repository root:
#   containers/build.sh                 # md, reference and ml
#   containers/build.sh md ml           # only these
#   containers/build.sh --dry-run       # print the commands, build nothing
# 1. base: a Debian root filesystem (debootstrap --variant=minbase, from the archive apt uses
#    here) with python3 + venv, `podman import`ed as localhost/ramanscreen-base (kept once made);
# 2. containers/<stage>.Containerfile on it, tagged <version> and lock-<digest of requirements.lock>;
# 3. `podman save` to containers/out/<stage>.tar, from which containers/<stage>.def builds the
#    Apptainer SIF (containers/<stage>.sif) where apptainer exists.
# podman settings for this machine (runc, ulimits within the hard limits) go to
# containers/out/containers.conf; export CONTAINERS_CONF=$PWD/containers/out/containers.conf to
# run the images with the same settings. Builds use the host's pip configuration and CA bundle
# (mounted read-only) and FIND_LINKS (default /opt/wheels, the torch CPU wheel) as /wheels.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
out="${OUT:-$here/out}"
all=(md reference ml)
dry_run=0
images=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    md|reference|ml) images+=("$arg") ;;
    *) echo "error: containers/build.sh: unknown image '$arg' (fix: choose from ${all[*]}, or --dry-run)" >&2; exit 2 ;;
  esac
done
[ ${#images[@]} -eq 0 ] && images=("${all[@]}")

version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$root/pyproject.toml" | head -n1)"
lock="$(sha256sum "$root/requirements.lock" | cut -c1-12)"
base="localhost/ramanscreen-base:bookworm"
find_links="${FIND_LINKS:-/opt/wheels}"

# The Debian mirror and suite apt uses here (deb822 .sources or one-line sources.list).
mirror="$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 || true)"
[ -n "$mirror" ] || mirror="$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
mirror="${DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}"
suite="${DEBIAN_SUITE:-bookworm}"

image_ref() { echo "localhost/ramanscreen-$1"; }

cmds=()
if [ "$dry_run" -eq 1 ] || ! podman image exists "$base" 2>/dev/null; then
  cmds+=("debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates $suite $out/rootfs $mirror")
  cmds+=("tar -C $out/rootfs -c . | podman import --change CMD=/bin/bash - $base")
fi
for name in "${images[@]}"; do
  ref="$(image_ref "$name")"
  cmds+=("podman build --layers --network=host --build-arg BASE=$base --build-arg VERSION=$version --build-arg LOCK_DIGEST=$lock MOUNTS -f containers/$name.Containerfile -t $ref:$version -t $ref:lock-$lock .")
  cmds+=("podman save --format docker-archive -o $out/$name.tar $ref:$version")
  cmds+=("apptainer build --force containers/$name.sif containers/$name.def")
done

if [ "$dry_run" -eq 1 ]; then
  printf '%s\n' "${cmds[@]}"
  exit 0
fi

for tool in podman runc; do
  if ! command -v "$tool" > /dev/null 2>&1; then
    echo "error: containers/build.sh: '$tool' not found on PATH (fix: apt-get install -y podman runc debootstrap fuse-overlayfs uidmap slirp4netns)" >&2
    exit 127
  fi
done
mkdir -p "$out"
cd "$root"

# podman on this kind of machine: crun fails (hybrid cgroups, setrlimit), runc works; the default
# ulimits exceed the hard limits.
cat > "$out/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$out/containers.conf"

# The host's pip configuration (files and PIP_* variables, merged by pip itself) as one pip.conf
# for the builds, and every local path it names (CA bundle, constraints, file:// indexes),
# mounted read-only at the same place.
mounts=()
host_python="$(command -v python3 || true)"
: > "$out/pip.conf"
if [ -n "$host_python" ]; then
  RS_PIP_CONF="$out/pip.conf" "$host_python" - <<'EOF' > "$out/pip-paths.txt"
import ast, os, subprocess, sys
lines = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout.splitlines()
conf, env = {}, {}
for line in lines:
    key, _, value = line.partition("=")
    section, _, name = key.partition(".")
    target = env if section == ":env:" else conf.setdefault(section, {})
    target[name] = ast.literal_eval(value)
conf.setdefault("global", {}).update(env)  # PIP_* variables win over files
paths = set()
with open(os.environ["RS_PIP_CONF"], "w") as f:
    for section, items in conf.items():
        f.write(f"[{section}]\n")
        for name, value in items.items():
            f.write(f"{name} = {value}\n")
            for word in str(value).split():
                word = word.removeprefix("file://").rstrip("/")
                if word.endswith("/simple"):  # a local index: its pages link to files beside it
                    word = os.path.dirname(word)
                if word.startswith("/") and os.path.exists(word):
                    paths.add(word)
for p in sorted(paths):
    print(p)
EOF
  mounts+=(-v "$out/pip.conf:/etc/pip.conf:ro")
  while read -r path; do
    [ -n "$path" ] && mounts+=(-v "$path:$path:ro")
  done < "$out/pip-paths.txt"
fi
[ -f /etc/ssl/certs/ca-certificates.crt ] && mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
[ -d "$find_links" ] && mounts+=(-v "$find_links:/wheels:ro")

if ! podman image exists "$base"; then
  command -v debootstrap > /dev/null || { echo "error: containers/build.sh: debootstrap not found (fix: apt-get install -y debootstrap)" >&2; exit 127; }
  echo "==> base: debootstrap --variant=minbase $suite from $mirror" >&2
  rm -rf "$out/rootfs"
  t0=$SECONDS
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$suite" "$out/rootfs" "$mirror" > "$out/debootstrap.log"
  rm -rf "$out/rootfs/var/cache/apt/archives/"*.deb "$out/rootfs/var/lib/apt/lists/"*
  echo "==> base: debootstrap $((SECONDS - t0)) s" >&2
  tar -C "$out/rootfs" -c . | podman import --change CMD=/bin/bash - "$base" > /dev/null
  rm -rf "$out/rootfs"
fi

for name in "${images[@]}"; do
  ref="$(image_ref "$name")"
  echo "==> $ref:$version (lock-$lock)" >&2
  t0=$SECONDS
  podman build --layers --network=host --build-arg BASE="$base" --build-arg VERSION="$version" \
    --build-arg LOCK_DIGEST="$lock" "${mounts[@]}" \
    -f "containers/$name.Containerfile" -t "$ref:$version" -t "$ref:lock-$lock" .
  rm -f "$out/$name.tar"
  t1=$SECONDS
  podman save --format docker-archive -o "$out/$name.tar" "$ref:$version"
  echo "==> $ref:$version: build $((t1 - t0)) s, save $((SECONDS - t1)) s, $(podman image inspect --format '{{.Size}}' "$ref:$version" | awk '{printf "%.2f GB", $1 / 1e9}')" >&2
done

if command -v apptainer > /dev/null 2>&1; then
  for name in "${images[@]}"; do
    apptainer build --force "containers/$name.sif" "containers/$name.def"
  done
else
  echo "apptainer not found: SIFs not built (on the HPC side: apptainer build md.sif containers/md.def, from containers/out/md.tar)" >&2
fi
echo "built: $(for n in "${images[@]}"; do printf '%s:%s ' "$(image_ref "$n")" "$version"; done)" >&2
