#!/usr/bin/env bash
# Build ramanscreen's per-stage Apptainer images from the repository root:
#   containers/build.sh                 # md.sif, reference.sif, ml.sif
#   containers/build.sh md ml           # only these
#   containers/build.sh --dry-run       # print the commands, build nothing
# Extra `apptainer build` flags come from APPTAINER_BUILD_FLAGS (e.g. "--fakeroot --force");
# the apptainer binary from APPTAINER (default: apptainer on PATH).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
apptainer="${APPTAINER:-apptainer}"
all=(md reference ml)
dry_run=0
images=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    md|reference|ml) images+=("$arg") ;;
    *) echo "error: containers/build.sh: unknown image '$arg' (fix: choose from ${all[*]}, or --dry-run)" >&2; exit 2 ;;
  esac
done
[ ${#images[@]} -eq 0 ] && images=("${all[@]}")

read -r -a flags <<< "${APPTAINER_BUILD_FLAGS:-}"
cmds=()
for name in "${images[@]}"; do
  cmds+=("$apptainer build ${flags[*]:+${flags[*]} }containers/$name.sif containers/$name.def")
done

if [ "$dry_run" -eq 1 ]; then
  printf '%s\n' "${cmds[@]}"
  exit 0
fi

if ! command -v "$apptainer" > /dev/null 2>&1; then
  echo "error: containers/build.sh: '$apptainer' not found on PATH (fix: install Apptainer >= 1.1, https://apptainer.org/docs/admin/main/installation.html, or 'module load apptainer'; set APPTAINER=/path/to/apptainer)" >&2
  exit 127
fi

cd "$root"  # %files paths in the .def files are relative to the repository root
for i in "${!images[@]}"; do
  echo "==> ${cmds[$i]}" >&2
  # shellcheck disable=SC2086
  "$apptainer" build ${flags[@]+"${flags[@]}"} "containers/${images[$i]}.sif" "containers/${images[$i]}.def"
done
echo "built: $(printf 'containers/%s.sif ' "${images[@]}")" >&2
