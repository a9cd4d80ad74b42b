#!/usr/bin/env bash
# Install what the SLURM tests need (Debian's slurm-wlm and munge, ~4 MB) when it is missing.
# The tests start and stop their own one-node SLURM (tests/slurm_fixture.py): no daemon, config
# file or munge key is set up here. Needs root (CI containers run as root).
set -euo pipefail
need=()
for pair in slurmctld:slurm-wlm slurmd:slurm-wlm sbatch:slurm-wlm munged:munge; do
  command -v "${pair%%:*}" > /dev/null 2>&1 || need+=("${pair##*:}")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "slurm-wlm and munge already installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: .ci/install_slurm.sh: installing ${need[*]} needs root (fix: run it as root or with sudo)" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) > /dev/null
echo "installed: $(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')"
