# Sourced by scripts/test and scripts/lab: installs the Debian packages of the real peers (and
# the tools around them) that are missing. Package scripts must not start the system services:
# the tests and the lab run their own instances on free loopback ports.
#
#   ensure_packages kamailio coturn nginx ...

ensure_packages() {
    local pkg missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}"
    local sudo=
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
