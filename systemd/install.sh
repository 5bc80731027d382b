#!/usr/bin/env bash
# Installs (or removes) punctual as a systemd service. See --help.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: systemd/install.sh [--prefix DIR] [--no-build] [--binary FILE]
       systemd/install.sh --uninstall [--prefix DIR]

Installs punctual as a systemd service:
  PREFIX/bin/punctual                 the binary
  /etc/systemd/system/punctual.service  the unit (ExecStart= points at the binary)
  /etc/default/punctual               settings, from systemd/punctual.env; only
                                      written when absent, never overwritten
Every path is prefixed with $DESTDIR when it is set (for staging or packaging).
Running it again is harmless: files already up to date are left alone.

Options:
  --prefix DIR    install the binary under DIR/bin (default: /usr/local)
  --no-build      do not run `cargo build --release --locked`; install the
                  binary that is already built (or the one given by --binary)
  --binary FILE   install FILE as the binary (implies --no-build)
  --uninstall     stop and disable the service, remove the binary and the unit;
                  /etc/default/punctual is removed only if it is still the
                  unmodified example, so an operator's settings survive
  -h, --help      show this text

Environment:
  DESTDIR           install into this directory instead of / (systemctl is
                    then not touched)
  CARGO_TARGET_DIR  where cargo puts the build (default: target/ in the repo)
  SUDO_USER         set by sudo: the build runs as this user, with their home
                    and ~/.cargo/bin on PATH, so target/ stays theirs
  SYSTEMCTL         the systemctl to run (default: systemctl, and only when
                    installing into / on a running systemd); when set, it is
                    run even with DESTDIR

Without DESTDIR this needs root. Under sudo the build runs as the invoking
user. As root without sudo (DESTDIR or not) it builds only when root alone
can write the checkout, the build directory and every directory above them,
and cargo is on root's PATH; otherwise it refuses. Build first instead:
  cargo build --release --locked && sudo systemd/install.sh --no-build

/etc/default/punctual is made mode 0600 on every install, even when kept.

Upgrading: when the unit was already installed and the binary or the unit
changed, a running service is restarted (`systemctl try-restart`) so the new
binary runs; a stopped service stays stopped.

The unit is overwritten on every install: change it with drop-ins
(`systemctl edit punctual`), not by editing the installed file.
EOF
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
unit_src="$here/punctual.service"
env_src="$here/punctual.env"
default_prefix=/usr/local

prefix=$default_prefix
build=yes
binary=
action=install
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prefix)
      [[ $# -ge 2 ]] || die "--prefix needs a directory"
      prefix=$2
      shift 2
      ;;
    --prefix=*)
      prefix=${1#--prefix=}
      shift
      ;;
    --no-build)
      build=no
      shift
      ;;
    --binary)
      [[ $# -ge 2 ]] || die "--binary needs a file"
      binary=$2
      build=no
      shift 2
      ;;
    --binary=*)
      binary=${1#--binary=}
      build=no
      shift
      ;;
    --uninstall)
      action=uninstall
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      die "unknown argument: $1 (see --help)"
      ;;
  esac
done

# The prefix ends up in ExecStart=, where spaces, quotes and % (systemd
# specifiers) would change its meaning: accept only plain absolute paths.
[[ $prefix =~ ^/[A-Za-z0-9._/+-]*$ ]] || die "--prefix must be an absolute path of letters, digits and ._/+- (got '$prefix')"
while [[ $prefix == */ && $prefix != / ]]; do prefix=${prefix%/}; done
[[ $prefix == / ]] && prefix=

destdir=${DESTDIR:-}
bin_path="$prefix/bin/punctual"      # where the service finds it
bin_dest="$destdir$bin_path"         # where this run writes it
unit_dest="$destdir/etc/systemd/system/punctual.service"
env_dest="$destdir/etc/default/punctual"

# systemctl is used only on the live system, and only when systemd runs it
# (or when SYSTEMCTL names one to use explicitly).
systemctl=${SYSTEMCTL:-systemctl}
live_systemd() {
  [[ -n ${SYSTEMCTL:-} ]] && return 0
  [[ -z $destdir && -d /run/systemd/system ]] && command -v systemctl >/dev/null
}

if [[ -z $destdir && $(id -u) -ne 0 ]]; then
  die "installing into / needs root (or set DESTDIR to stage the files elsewhere)"
fi

target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target="$repo/$target"

# Prints $1, or the first thing below it, that a user other than root owns
# or may write (owner not root, or group/other write); symbolic links are
# followed to what they point at. Extra arguments go to find (-maxdepth 0).
# Prints nothing when there is none, or when $1 does not exist.
not_root_only() {
  [[ -e $1 ]] || return 0
  local found
  # A walk that fails (a symlink loop, an unreadable file) counts as unsafe.
  found=$(find -L "$@" ! -type l \( ! -uid 0 -o -perm /022 \) -print -quit 2>/dev/null) ||
    found=${found:-$1}
  [[ -z $found ]] || echo "$found"
}

# Prints the first path, among those a build as root would trust, that
# someone other than root may have written; nothing when root alone could.
# A build runs code from the checkout with the builder's rights: build.rs,
# the vendored crates' build scripts and proc macros, compilers and linkers
# named in .cargo/config.toml (read from the checkout and from every
# directory above it), and build-script binaries already under the build
# directory, which cargo runs again without rebuilding them. Directories
# above are checked too: whoever can write one can add a .cargo/ there, or
# swap what lies below.
untrusted_build_input() {
  local top dir found
  for top in "$@"; do
    [[ -e $top ]] && top=$(cd "$top" && pwd -P)
    found=$(not_root_only "$top")
    dir=$top
    while [[ -z $found && $dir != / ]]; do
      dir=$(dirname "$dir")
      found=$(not_root_only "$dir" -maxdepth 0)
      [[ -n $found ]] || found=$(not_root_only "$dir/.cargo")
    done
    if [[ -n $found ]]; then
      echo "$found"
      return
    fi
  done
}

# As root without sudo the build would run as root. That is refused unless
# root alone can have written what the build runs: in a checkout that
# another account can write (its owner's, a shared one), building as root
# hands that account root, so the build has to run as them (sudo, which
# builds as SUDO_USER) or happen beforehand (--no-build, --binary). A
# checkout that only root can write is built: everyone able to plant code
# in it is root already, and refusing would only make root build the same
# code by hand. DESTDIR does not matter: staging runs the same build.
# sudo from root (SUDO_USER=root) is plain root.
if [[ $action == install && $build == yes && $(id -u) -eq 0 &&
  (-z ${SUDO_USER:-} || $SUDO_USER == root) ]]; then
  unsafe=$(untrusted_build_input "$repo" "$target")
  if [[ -n $unsafe ]]; then
    who=$(stat -L -c 'owner %U, mode %a' "$unsafe" 2>/dev/null) || who="not checked"
    die "refusing to build as root: $unsafe ($who) can be written by an account other than root, and building runs code from it. Run this with sudo from the account that owns the checkout (sudo systemd/install.sh), or build first and install with --no-build or --binary FILE."
  fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Copies $1 to $2 with mode $3 unless $2 already has that content and mode.
# The new file is renamed into place, so a running binary is never rewritten.
# Sets changed=yes when it wrote something.
changed=no
put() {
  local src=$1 dest=$2 mode=$3
  if [[ -f $dest ]] && cmp -s "$src" "$dest" && [[ $(stat -c %a "$dest") == "${mode#0}" ]]; then
    echo "unchanged  $dest"
    return
  fi
  mkdir -p "$(dirname "$dest")"
  install -m "$mode" "$src" "$dest.new.$$"
  mv -f "$dest.new.$$" "$dest"
  echo "installed  $dest"
  changed=yes
}

# Builds the release binary. Under sudo it runs as the invoking user, so that
# target/ is not left owned by root and their cargo (usually ~/.cargo/bin,
# which is not on root's PATH) is the one used.
build_release() {
  local no_cargo="cargo is not on the PATH"
  if [[ $(id -u) -eq 0 && -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
    local home
    home=$(getent passwd "$SUDO_USER" | cut -d: -f6) || true
    [[ -n $home ]] || die "cannot find the home directory of $SUDO_USER; build as that user and pass --binary FILE"
    local path="$home/.cargo/bin:$PATH"
    echo "building   as $SUDO_USER"
    local status=0
    sudo -u "$SUDO_USER" -H -- env HOME="$home" PATH="$path" \
      ${CARGO_TARGET_DIR:+CARGO_TARGET_DIR="$CARGO_TARGET_DIR"} \
      sh -c 'command -v cargo >/dev/null || exit 127; cd "$1" && exec cargo build --release --locked' \
      sh "$repo" || status=$?
    case $status in
      0) ;;
      127) die "$no_cargo of $SUDO_USER ($path): build as that user and pass --binary FILE" ;;
      *) die "the build as $SUDO_USER failed (status $status); if target/ is owned by root from an earlier install, remove it or pass --binary FILE" ;;
    esac
    return
  fi
  command -v cargo >/dev/null || die "$no_cargo of $(id -un 2>/dev/null || echo this user): run through sudo from the account that has cargo, or build first and pass --binary FILE"
  (cd "$repo" && cargo build --release --locked)
}

remove() {
  if [[ -e $1 || -L $1 ]]; then
    rm -f "$1"
    echo "removed    $1"
  fi
}

if [[ $action == uninstall ]]; then
  if live_systemd && [[ -f $unit_dest ]]; then
    "$systemctl" disable --now punctual.service || echo "install.sh: could not stop or disable punctual.service; removing it anyway" >&2
  fi
  remove "$bin_dest"
  remove "$unit_dest"
  if [[ -f $env_dest ]]; then
    if cmp -s "$env_src" "$env_dest"; then
      remove "$env_dest"
    else
      echo "kept       $env_dest (it holds local settings; delete it by hand if unwanted)"
    fi
  fi
  if live_systemd; then
    "$systemctl" daemon-reload
  fi
  exit 0
fi

if [[ $build == yes ]]; then
  build_release
fi
if [[ -z $binary ]]; then
  binary="$target/release/punctual"
fi
[[ -f $binary && -x $binary ]] || die "no executable binary at $binary (build it, or pass --binary FILE)"

# ExecStart= in the shipped unit names the default prefix; point it at the
# binary actually installed.
unit_tmp="$tmp/punctual.service"
if [[ $bin_path == "$default_prefix/bin/punctual" ]]; then
  cp "$unit_src" "$unit_tmp"
else
  awk -v exec_start="ExecStart=$bin_path" \
    '/^ExecStart=/ { print exec_start; next } { print }' "$unit_src" >"$unit_tmp"
fi
grep -qx "ExecStart=$bin_path" "$unit_tmp" || die "the unit has no ExecStart= line to point at $bin_path"

# An upgrade: the unit was there before this run.
upgrade=no
[[ -f $unit_dest ]] && upgrade=yes
put "$binary" "$bin_dest" 0755
put "$unit_tmp" "$unit_dest" 0644
replaced=$changed
# It may come to hold PUNCTUAL_TOKEN: readable by root only, also when it
# was created by hand or by an older installer with a looser mode.
if [[ -e $env_dest ]]; then
  echo "kept       $env_dest (existing settings are never overwritten)"
  if [[ ! -f $env_dest ]]; then
    # A symlink to /dev/null (settings switched off) must not make
    # /dev/null root-only.
    echo "install.sh: $env_dest is not a regular file; its mode is left alone" >&2
  elif [[ $(stat -L -c %a "$env_dest") != 600 ]]; then
    chmod 0600 "$env_dest"
    echo "secured    $env_dest (mode 600: it may hold the token)"
  fi
else
  put "$env_src" "$env_dest" 0600
fi

if live_systemd; then
  "$systemctl" daemon-reload
  if [[ $upgrade == yes && $replaced == yes ]]; then
    # Restarts the service only if it is running: the new binary takes over.
    "$systemctl" try-restart punctual.service
    echo "restarted  punctual.service (if it was running)"
  fi
fi

echo
if [[ -n $destdir ]]; then
  echo "Staged under $destdir. Once the files are in place on the target system:"
else
  echo "Installed. To start it now and at every boot, then follow its log:"
fi
echo "  systemctl enable --now punctual"
echo "  journalctl -fu punctual"
