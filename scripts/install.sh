#!/usr/bin/env bash
# Install, change or remove the `safehold` command for the current user (docs/install.md).
#
#   scripts/install.sh [--version X] [--method auto|pipx|venv] [--python PY]
#                      [--find-links DIR]... [--index-url URL] [--no-index]
#   scripts/install.sh --uninstall
#
# With pipx on PATH (--method auto, the default) it runs `pipx install 'safehold[runner]'`;
# without, it makes a virtual environment under ${XDG_DATA_HOME:-~/.local/share}/safehold and
# links ~/.local/bin/safehold to it. Running it again changes nothing when the wanted version is
# installed; --version X installs exactly X (up or down). A failed install leaves the previous
# one working: the venv method builds a new environment and switches a symlink only when it
# works. The package index is pip's (PIP_INDEX_URL, pip.conf) unless --index-url/--find-links/
# --no-index say otherwise, so a mirror or a directory of wheels works without internet.
set -euo pipefail

prog="install.sh"
version="" method="auto" python="${PYTHON:-python3}" uninstall=0
pip_args=()
die() { echo "$prog: $*" >&2; exit 2; }
say() { echo "$prog: $*" >&2; }
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

while (($#)); do
  case "$1" in
    --version) [[ $# -ge 2 ]] || die "--version needs a value, e.g. --version 0.1.0"
               version="$2"; shift ;;
    --version=*) version="${1#*=}" ;;
    --method) [[ $# -ge 2 ]] || die "--method needs auto, pipx or venv"; method="$2"; shift ;;
    --method=*) method="${1#*=}" ;;
    --python) [[ $# -ge 2 ]] || die "--python needs an interpreter"; python="$2"; shift ;;
    --find-links|--index-url) [[ $# -ge 2 ]] || die "$1 needs a value"
               pip_args+=("$1" "$2"); shift ;;
    --no-index) pip_args+=("--no-index") ;;
    --uninstall) uninstall=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
case "$method" in auto|pipx|venv) ;; *) die "--method must be auto, pipx or venv, not '$method'" ;; esac
if [[ -n "$version" && ! "$version" =~ ^[0-9]+(\.[0-9]+)*([a-z]+[0-9]*)?(\.post[0-9]+)?(\.dev[0-9]+)?$ ]]; then
  die "--version '$version' is not a release version such as 0.1.0"
fi

data="${XDG_DATA_HOME:-$HOME/.local/share}/safehold"
bindir="$HOME/.local/bin"
link="$bindir/safehold"
spec="safehold[runner]${version:+==$version}"

have_pipx() { command -v pipx >/dev/null 2>&1; }
installed_version() {  # the version a `safehold` executable reports, or nothing
  [[ -x "$1" ]] && "$1" --version 2>/dev/null | awk '{print $NF}' || true
}
pipx_has() { have_pipx && pipx list --short 2>/dev/null | awk '{print $1}' | grep -qx safehold; }
ours() { [[ -L "$link" && "$(readlink "$link")" == "$data/"* ]]; }

if ((uninstall)); then
  removed=0
  if pipx_has; then pipx uninstall safehold >&2; removed=1; fi
  if ours; then rm -f "$link"; removed=1; fi
  if [[ -d "$data" ]]; then rm -rf "$data"; removed=1; fi
  if ((removed)); then say "safehold uninstalled"; else say "safehold is not installed; nothing to do"; fi
  exit 0
fi

if [[ "$method" == auto ]]; then
  if have_pipx; then method=pipx; else method=venv; fi
fi

if [[ "$method" == pipx ]]; then
  have_pipx || die "pipx is not on PATH; install it, or use --method venv"
  if pipx_has; then
    current="$(pipx list --short 2>/dev/null | awk '$1 == "safehold" {print $2}')"
    if [[ -z "$version" || "$version" == "$current" ]]; then
      say "safehold $current is installed (pipx); nothing to do (--version X changes it)"
      exit 0
    fi
  fi
  args=(install --force "$spec")
  ((${#pip_args[@]})) && args+=(--pip-args "${pip_args[*]}")
  pipx "${args[@]}" >&2 || die "pipx could not install $spec (the message above says why)"
  say "installed $(pipx list --short | awk '$1 == "safehold"') with pipx"
  exit 0
fi

# --- venv method -------------------------------------------------------------------------------
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || die "safehold needs Python 3.11 or newer; '$python' is not (give --python PY)"
if [[ -e "$link" ]] && ! ours; then
  die "$link exists and is not this installer's; remove it or install with pipx"
fi
current="$(installed_version "$data/current/bin/safehold")"
if [[ -n "$current" && ( -z "$version" || "$version" == "$current" ) ]]; then
  ours || ln -sfn "$data/current/bin/safehold" "$link"
  say "safehold $current is installed ($data); nothing to do (--version X changes it)"
  exit 0
fi

mkdir -p "$data" "$bindir"
new="$(mktemp -d "$data/venv-XXXXXX")"
cleanup() { if [[ -n "${new:-}" ]]; then rm -rf "$new"; fi; }
trap cleanup EXIT
"$python" -m venv "$new" >&2 || die "cannot create a virtual environment with '$python'"
"$new/bin/python" -m pip install -q ${pip_args[@]+"${pip_args[@]}"} "$spec" >&2 \
  || die "pip could not install $spec (the message above says why); the previous installation, if any, is unchanged"
got="$(installed_version "$new/bin/safehold")"
[[ -n "$got" ]] || die "the new safehold does not start; the previous installation is unchanged"
old="$(readlink "$data/current" 2>/dev/null || true)"
ln -sfn "$new" "$data/current.tmp" && mv -T "$data/current.tmp" "$data/current"
ln -sfn "$data/current/bin/safehold" "$link"
if [[ -n "$old" && "$old" != "$new" ]]; then rm -rf "$old"; fi
new=""  # keep it
say "installed safehold $got in $data; the command is $link"
case ":$PATH:" in *":$bindir:"*) ;; *) say "add $bindir to PATH to run safehold" ;; esac
