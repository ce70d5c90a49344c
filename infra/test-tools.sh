#!/usr/bin/env bash
# The system tools the Studio's tests run for real, from Debian's own packages: chromium (driven by
# Playwright, whose browser downloads are not used) and PostgreSQL (a throwaway cluster per session).
#   infra/test-tools.sh          install whatever is missing (apt-get as root; otherwise print the command)
#   infra/test-tools.sh check    only report what is missing (exit 1 if anything is)
# A fast no-op when everything is present, so `make test` runs it every time.
set -euo pipefail

packages=(chromium postgresql fonts-dejavu-core)

log() { echo "test tools: $*" >&2; }

have_chromium() { [[ -x /usr/bin/chromium ]]; }

have_postgres() { compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' > /dev/null; }

have_fonts() { [[ -d /usr/share/fonts/truetype/dejavu ]]; }

missing() {
  have_chromium || echo chromium
  have_postgres || echo postgresql
  have_fonts || echo fonts-dejavu-core
}

install() {
  local wanted
  mapfile -t wanted < <(missing)
  if [[ ${#wanted[@]} -eq 0 ]]; then return 0; fi
  local command="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${packages[*]}"
  if [[ $EUID -ne 0 ]]; then
    log "missing: ${wanted[*]}; install them as root with:"
    echo "  sudo sh -c '$command'" >&2
    exit 1
  fi
  log "installing ${packages[*]} from Debian (missing: ${wanted[*]})"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
  local still
  mapfile -t still < <(missing)
  if [[ ${#still[@]} -ne 0 ]]; then log "still missing after apt-get: ${still[*]}"; exit 1; fi
  log "installed: $(versions)"
}

versions() {
  local chromium pg_ctl
  chromium=$(/usr/bin/chromium --version 2>/dev/null | head -1 || true)
  pg_ctl=$(compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' | sort -V | tail -1)
  echo "${chromium:-chromium ?}; $("$pg_ctl" --version | awk '{print $2, $3}')"
}

check() {
  local wanted
  mapfile -t wanted < <(missing)
  if [[ ${#wanted[@]} -eq 0 ]]; then log "all present ($(versions))"; return 0; fi
  log "missing: ${wanted[*]} (run infra/test-tools.sh as root to install them)"
  exit 1
}

case "${1:-install}" in
  install) install ;;
  check) check ;;
  *) echo "usage: $0 [install|check]" >&2; exit 2 ;;
esac
