#!/usr/bin/env bash
# demo.sh: migrate a running container between two podman "hosts" on this
# machine through a local registry, and show that its process continued.
#   host A: this machine's podman storage
#   host B: a podman service in its own mount namespace (tests/hosts.sh)
# Run it through `make demo` (which sets up the host and builds first).
# KEEP=1 leaves the hosts running afterwards (tests/hosts.sh down to stop).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
state=${DEMO_STATE:-/tmp/podman-migrate-demo}
bin=$repo/bin/podman-migrate
name=demo-counter

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

bash "$repo/tests/hosts.sh" up "$state"
if [[ -z ${KEEP:-} ]]; then
	trap 'podman --url "$HOST_A_URL" rm -f "$name" >/dev/null 2>&1 || true; bash "$repo/tests/hosts.sh" down "$state"' EXIT
fi
# shellcheck source=/dev/null
source "$state/env"
A=(podman --url "$HOST_A_URL")
B=(podman --url "$HOST_B_URL")
"${A[@]}" rm -f "$name" >/dev/null 2>&1 || true

say "host A: start a container that counts in memory and holds 64 MiB"
"${A[@]}" run -d --name "$name" "$TEST_IMAGE" /bin/workload -mem 64 >/dev/null
sleep 2
# shellcheck disable=SC2016 # expanded inside the container
"${A[@]}" exec "$name" sh -c 'echo "written on host A at $(date)" > /etc/demo-note'
printf 'host A status: %s\n' "$("${A[@]}" exec "$name" cat /workload/status)"

ref=$REGISTRY/demo/$name:latest
say "host A: podman-migrate push $name $ref"
pushed=$("$bin" --url "$HOST_A_URL" push --tls-verify=false "$name" "$ref")
printf 'pushed: %s\n' "$pushed"
printf 'host A container is now: %s\n' "$("${A[@]}" inspect --format '{{.State.Status}}' "$name")"

say "host B: podman-migrate pull $pushed"
id=$("$bin" --url "$HOST_B_URL" pull --tls-verify=false "$pushed")
printf 'restored on host B as container %s\n' "${id:0:12}"

say "host B: the same process carries on (same boot nonce, counter going on)"
for _ in 1 2 3; do
	printf 'host B status: %s\n' "$("${B[@]}" exec "$name" cat /workload/status)"
	sleep 1
done
printf 'file from host A: %s\n' "$("${B[@]}" exec "$name" cat /etc/demo-note)"
say "done: $name moved from host A to host B"
