# System parts the tests need, installed the same way for each (sourced by .ci/run; tests/test_ci.py).
# A new part (Docker, Prometheus, ...) is one `install_system` line in .ci/run.

# install_system NAME PROGRAM... -- PACKAGE...
# Installs the Debian PACKAGEs unless every PROGRAM is already on PATH. Where it cannot (not
# Debian-like, or neither root nor password-less sudo), it stops at once with one sentence.
install_system() {
  local name=$1 programs=() missing=""
  shift
  while [[ $1 != -- ]]; do programs+=("$1"); shift; done
  shift
  for program in "${programs[@]}"; do
    command -v "$program" >/dev/null || missing+=" $program"
  done
  [[ -z $missing ]] && return
  local how="apt-get install $*"
  if ! command -v apt-get >/dev/null; then
    echo "$name is missing (no$missing) and this is not a Debian-like system: install it with" \
      "your package manager (Debian: $how), then run again." >&2
    exit 1
  fi
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if ! sudo -n true 2>/dev/null; then
      echo "$name is missing (no$missing) and this user cannot install it: run 'sudo $how'," \
        "then run again." >&2
      exit 1
    fi
    sudo=(sudo -n)
  fi
  local install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "$@")
  if ! "${install[@]}" >/dev/null 2>&1; then  # usually stale or missing package lists
    "${sudo[@]}" apt-get update -qq
    if ! "${install[@]}" >/dev/null; then
      echo "$name could not be installed: '$how' failed (see above)." >&2
      exit 1
    fi
  fi
}
