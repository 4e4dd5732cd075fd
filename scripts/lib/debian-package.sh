# Sourced by the scripts that need a server or tool from Debian (with-postgres, with-etcd,
# check-deploy), so installing it is written once.
#
#   found=$(ensure_debian_package SCRIPT PACKAGE FINDER [APT-GET FLAGS...])
#
# FINDER is a command (usually a shell function) that prints the path of what the script needs,
# or nothing. When it prints nothing, PACKAGE is installed with apt-get (as root; otherwise the
# caller is told which package to install), and FINDER is asked again. Prints the path found;
# fails with a message on stderr if there is none.
ensure_debian_package() {
  local script=$1 package=$2 finder=$3
  shift 3
  local found
  found=$("$finder")
  if [ -z "$found" ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "$script: not found; install Debian's $package package" >&2
      return 1
    fi
    echo "$script: installing Debian's $package package (apt-get install $package)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" "$package" >/dev/null
    found=$("$finder")
    if [ -z "$found" ]; then
      echo "$script: Debian's $package package is installed but still not found" >&2
      return 1
    fi
  fi
  echo "$found"
}
