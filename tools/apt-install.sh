#!/bin/sh
# Install one of Debian's packages that some tests need, when this user can:
#   sh tools/apt-install.sh COMMAND PACKAGE TESTS REQUIRED_VAR TRIES PAUSE
# Nothing happens when COMMAND is there. A busy package manager (another apt or dpkg
# holding its lock) is waited for and retried, TRIES times PAUSE seconds apart; if the
# package still cannot be installed, TESTS are skipped, or fail when the environment
# variable named REQUIRED_VAR is 1. Never a failure of its own.
command=$1 package=$2 tests=$3 required_var=$4 tries=$5 pause=$6
command -v "$command" >/dev/null && exit 0
eval "required=\${$required_var:-}"
if [ "$required" = 1 ]; then
  then_what="$required_var=1, so $tests will fail"
else
  then_what="$tests will be skipped"
fi
if [ "$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else
  echo "$command is not installed and this user cannot install it: $then_what"; exit 0; fi
log=$(mktemp); try=1
while :; do
  echo "installing $package for $tests (try $try of $tries) ..."
  if { $SUDO apt-get -o DPkg::Lock::Timeout="$pause" update -qq &&
       DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout="$pause" \
         install -y -qq "$package"; } >"$log" 2>&1; then
    rm -f "$log"; echo "$package installed"; exit 0; fi
  if ! grep -qiE 'could not get lock|unable to acquire|unable to lock' "$log" || [ "$try" -ge "$tries" ]; then break; fi
  echo "the package manager is busy (another apt or dpkg holds its lock): trying again in $pause s"
  sleep "$pause"; try=$((try + 1))
done
echo "could not install $package: $(tail -n 1 "$log")"; rm -f "$log"
echo "$then_what"
