#!/bin/bash
# Run a pytest selection in Debian chroots with a newer QGIS than the host's Debian 12 (issue #20):
#   trixie = Debian 13 (QGIS 3.40 LTR, Python 3.13, GDAL 3.10, numpy 2.2)
#   sid    = Debian unstable (QGIS 3.44, Python 3.14, ...; whatever the mirror holds today)
#
# Usage (root, no stdin needed):
#   tools/chroot_tests.sh DISTROS [PYTEST ARGS...]
#     DISTROS: trixie, sid, or a comma list (trixie,sid); "all" is trixie,sid
#     e.g. tools/chroot_tests.sh trixie tests/qgis tests/pipeline
#          tools/chroot_tests.sh all -x tests/qgis
#   With no pytest args it runs tests/qgis tests/pipeline tests/clip.
#
# What it keeps (outside the clone, so that a fresh clone reuses it):
#   $RSICRC_CHROOTS/<distro>/           the chroot (debootstrap minbase + QGIS from Debian)
#   $RSICRC_CHROOTS/<distro>/opt/rsicrc-venv   the venv, rebuilt when pyproject.toml changes
#   $RSICRC_CHROOTS/wheels/             the wheels pip downloaded, shared by all chroots: of the
#                                       3.3 GB per venv, 2.4 GB (torch's CUDA libraries) are
#                                       py3-none and are downloaded once, not once per distro.
#                                       (A shared pip cache does not do this where a proxy strips
#                                       the Cache-Control headers: pip then caches nothing.)
#   $RSICRC_CHROOTS/logs/               the full pytest output of each run
# Every step is idempotent: a re-run skips what is done (stamp files) and redoes what is not.
#
# Mounts: everything (proc, dev, the source, shared/, the wheels) is mounted inside a private
# mount + PID namespace (unshare), so nothing is ever mounted in the host's namespace and all of
# it, with every process the tests left behind, goes away when the run ends, even on SIGKILL.
# A host-side `rm -rf` of a chroot can then never reach the host's /dev; safe_remove() checks
# anyway, in case someone mounted things there by hand.
set -euo pipefail

CACHE=${RSICRC_CHROOTS:-/var/cache/rsicrc-chroots}
# Empty: debootstrap's own default mirror. A mirror URL can be given for debootstrap and apt.
MIRROR=${RSICRC_DEBIAN_MIRROR:-}
# The Debian packages the tests need. --no-install-recommends: on trixie the recommends are 336
# more packages, 170 MB to download, ~650 MB installed (GRASS, KDE wallet, dbus, ...) that no
# test uses. Of them: xauth (xvfb-run needs it) and proj-bin (Debian's pyproj finds PROJ's data
# only through the `proj` program when run from a venv; without it every `import pyproj`, which
# pyogrio does, warns on stderr and the CLI's one-line errors get two more lines).
# default-jre-headless is left out: the METEOR test skips without java
# (RSICRC_CHROOT_EXTRA_APT="default-jre-headless" adds it).
APT_PACKAGES="qgis python3-qgis qgis-providers python3-venv xvfb xauth proj-bin gdal-bin ${RSICRC_CHROOT_EXTRA_APT:-}"
VENV=/opt/rsicrc-venv  # inside the chroot
DEFAULT_TESTS=(tests/qgis tests/pipeline tests/clip)

# Requirements of pyproject.toml replaced in the chroots (name=requirement), should one ever need
# it; today none does: its pins have wheels for cp311-cp314, and numpy < 2 is held only in Debian
# 12's development venv (constraints-debian12.txt). Keep this list minimal.
OVERRIDES=()

# The checkout to test: this script's own, or RSICRC_SRC (e.g. a copy, so that the work tree can
# be edited while a long run goes on: the source is mounted live, not copied).
REPO=$(cd "${RSICRC_SRC:-$(dirname "${BASH_SOURCE[0]}")/..}" && pwd)
SHARED=$(cd "$REPO/.." && pwd)/shared  # the parity cases: tests read ../shared beside the repo

log() { printf '[chroot_tests %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

# Mount points at or below $1 in the host's namespace (there should never be any).
mounts_under() {
    local dir
    dir=$(realpath -m "$1")
    # field 5 of mountinfo is the mount point (octal escapes for spaces; our paths have none)
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r
}

# rm -rf that refuses while anything is mounted below the folder. (`findmnt -R DIR` alone is not
# such a check: it prints nothing when DIR itself is not a mount point, mounts below it or not.)
safe_remove() {
    local dir=$1 m
    [ -e "$dir" ] || return 0
    for m in $(mounts_under "$dir"); do
        log "unmounting leftover $m"
        umount -R "$m" 2>/dev/null || umount -R -l "$m" || true
    done
    [ -z "$(mounts_under "$dir")" ] || die "still mounted below $dir, not removing it: $(mounts_under "$dir" | tr '\n' ' ')"
    # --one-file-system: even if a mount appeared meanwhile, rm does not descend into it.
    rm -rf --one-file-system -- "$dir"
}

# Run "$@" inside chroot $1 with /proc, /dev, the source, shared/ and the pip cache mounted in a
# private namespace. The inner script unmounts in a trap too, though the namespace dying is what
# really guarantees that nothing stays mounted.
in_chroot() {
    local root=$1; shift
    # The host's CA bundle at a path that the chroot's ca-certificates package never rewrites:
    # on machines behind a TLS-inspecting proxy, its CA is only in the host's bundle.
    mkdir -p "$root/etc/rsicrc"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/rsicrc/host-ca.crt"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    mkdir -p "$root/work/src" "$root/work/shared" "$root/var/cache/rsicrc-wheels" "$CACHE/wheels"
    # tests/qgis/conftest.py and the plugin's settings look for the project's venv at <repo>/.venv:
    # the chroot's venv is mounted there (over the host's one, if any, which a Python 3.13+
    # interpreter could not use). This leaves an empty .venv/ (git-ignored) in a clone without one.
    [ -L "$REPO/.venv" ] && log "warning: $REPO/.venv is a symlink; the worker tests will not find the chroot's venv"
    mkdir -p "$REPO/.venv"
    local envs=(PATH="$VENV/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root LANG=C.UTF-8
                DEBIAN_FRONTEND=noninteractive QT_QPA_PLATFORM=offscreen
                PIP_CERT=/etc/rsicrc/host-ca.crt PIP_NO_CACHE_DIR=1
                PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1)
    local v
    for v in CI OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; do  # what the host's test run would see too
        [ -n "${!v:-}" ] && envs+=("$v=${!v}")
    done
    # --kill-child: if this script is killed, the namespace (and its mounts) go with it.
    unshare --mount --pid --fork --kill-child --propagation private -- \
        bash -c '
            set -eu
            root=$1 src=$2 shared=$3 wheels=$4 venv=$5; shift 5
            cleanup() { umount -R "$root" 2>/dev/null || true; }
            trap cleanup EXIT
            # The chroot root as a mount point of its own: `unshare -m` inside (the read-only
            # mount tests of test_hostile_layers) cannot change the propagation of a / that is not.
            mount --bind "$root" "$root"
            mount -t proc proc "$root/proc"
            mount --rbind /dev "$root/dev"
            mount --bind "$src" "$root/work/src"
            if [ -d "$shared" ]; then mount --bind -o ro "$shared" "$root/work/shared"; fi
            # (not over a .venv that is a symlink: the mount would land on its host-side target)
            if [ -x "$root$venv/bin/python" ] && [ ! -L "$src/.venv" ]; then
                mount --bind "$root$venv" "$root/work/src/.venv"
            fi
            mount --bind "$wheels" "$root/var/cache/rsicrc-wheels"
            # not exec: the trap must run (PID 1 of the namespace)
            chroot "$root" /usr/bin/env -i "$@" </dev/null
        ' in_chroot "$root" "$REPO" "$SHARED" "$CACHE/wheels" "$VENV" "${envs[@]}" "$@"
}

# --- building ------------------------------------------------------------------------------------

ensure_debootstrap() {
    command -v debootstrap >/dev/null && return
    log "installing debootstrap on the host"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
}

build_base() {  # debootstrap into <distro>.partial, renamed when complete: <distro>/ is always whole
    local distro=$1 root=$2
    [ -d "$root" ] && return
    ensure_debootstrap
    safe_remove "$root.partial"  # a build that was interrupted: debootstrap cannot resume it
    log "$distro: debootstrap (minbase)"
    local t=$SECONDS
    debootstrap --variant=minbase "$distro" "$root.partial" $MIRROR >"$CACHE/logs/$distro-debootstrap.log" 2>&1 \
        || die "$distro: debootstrap failed, see $CACHE/logs/$distro-debootstrap.log"
    # No daemon may start inside the chroot (postinst scripts of dbus and friends).
    printf '#!/bin/sh\nexit 101\n' >"$root.partial/usr/sbin/policy-rc.d"
    chmod +x "$root.partial/usr/sbin/policy-rc.d"
    # sid's Release file is only valid for a week; a mirror that lags behind (or a machine whose
    # clock is ahead) would otherwise make apt refuse it. Applies to apt inside the chroot only.
    echo 'Acquire::Check-Valid-Until "false";' >"$root.partial/etc/apt/apt.conf.d/99rsicrc"
    mv "$root.partial" "$root"
    log "$distro: debootstrap done in $((SECONDS - t)) s"
}

build_apt() {  # (re)run when the package list changes; apt-get resumes a half-done install itself
    local distro=$1 root=$2
    local stamp="$root/etc/rsicrc/apt.stamp" want
    want=$(echo $APT_PACKAGES | tr ' ' '\n' | sort -u | xargs)
    [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return
    log "$distro: apt-get install $want"
    local t=$SECONDS
    in_chroot "$root" sh -c "dpkg --configure -a && apt-get update -q && apt-get install -y -q --no-install-recommends $want && apt-get clean" \
        >"$CACHE/logs/$distro-apt.log" 2>&1 || die "$distro: apt-get failed, see $CACHE/logs/$distro-apt.log"
    echo "$want" >"$stamp"
    log "$distro: apt done in $((SECONDS - t)) s"
}

build_venv() {  # rebuilt from scratch when pyproject.toml, the overrides or this logic change
    local distro=$1 root=$2
    local want have
    want=$( { sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1; printf '%s\n' "${OVERRIDES[@]}" "venv-v2"; } | sha256sum | cut -d' ' -f1)
    have=$(cat "$root$VENV/.rsicrc-stamp" 2>/dev/null || true)
    [ "$want" = "$have" ] && return
    log "$distro: building the venv (pyproject.toml changed or first run)"
    local t=$SECONDS
    safe_remove "$root$VENV"
    # requirements = pyproject's dependencies + [test], with OVERRIDES replacing by name; the
    # project itself then goes in with --no-deps (its dependencies are in already).
    in_chroot "$root" sh -c '
        set -e
        /usr/bin/python3 -m venv --system-site-packages '"$VENV"'
        '"$VENV"'/bin/python - "$@" >/tmp/rsicrc-requirements.txt <<"EOF"
import re, sys, tomllib
project = tomllib.load(open("/work/src/pyproject.toml", "rb"))["project"]
overrides = dict(o.split("=", 1) for o in sys.argv[1:])
for req in project["dependencies"] + project["optional-dependencies"]["test"]:
    name = re.match(r"[A-Za-z0-9_.-]+", req).group(0)
    if name in overrides:
        print(f"# override: {req} -> {overrides[name]}", file=sys.stderr)
        req = overrides[name]
    print(req)
EOF
        cat /tmp/rsicrc-requirements.txt
        '"$VENV"'/bin/pip install -q --upgrade pip
        # download into the shared wheel folder (skips files already there), install from it
        '"$VENV"'/bin/pip download -q -d /var/cache/rsicrc-wheels -r /tmp/rsicrc-requirements.txt
        '"$VENV"'/bin/pip install --no-index --find-links /var/cache/rsicrc-wheels -r /tmp/rsicrc-requirements.txt
        '"$VENV"'/bin/pip install --no-deps -e /work/src
        '"$VENV"'/bin/pip check || true
        '"$VENV"'/bin/pip freeze --all >'"$VENV"'/freeze.txt
    ' sh "${OVERRIDES[@]}" >"$CACHE/logs/$distro-venv.log" 2>&1 \
        || die "$distro: venv build failed, see $CACHE/logs/$distro-venv.log"
    echo "$want" >"$root$VENV/.rsicrc-stamp"
    log "$distro: venv done in $((SECONDS - t)) s"
}

# --- running -------------------------------------------------------------------------------------

run_tests() {  # prints one summary line; returns pytest's exit code
    local distro=$1 root=$2; shift 2
    # A fresh /tmp each run: pytest keeps failed tests' tmp_path there, and QGIS's profile
    # (HOME below) must not carry settings from one run into the next.
    safe_remove "$root/tmp"
    mkdir -m 1777 "$root/tmp"
    local logf="$CACHE/logs/$distro-pytest-$(date +%Y%m%d-%H%M%S).log" t=$SECONDS rc=0
    local versions
    versions=$(in_chroot "$root" python -c 'import sys; from qgis.core import Qgis; print("QGIS %s, Python %s" % (Qgis.QGIS_VERSION.split("-")[0], sys.version.split()[0]))' 2>/dev/null || echo "versions unknown")
    log "$distro ($versions): pytest $* (log: $logf)"
    in_chroot "$root" sh -c 'mkdir -p /tmp/home && cd /work/src && HOME=/tmp/home exec python -m pytest -p no:cacheprovider "$@"' \
        sh "$@" 2>&1 | tee "$logf" || rc=$?
    local summary
    # pytest's closing line: "=== 3 failed, 97 passed in 80s ===" (or bare with -q / --co)
    summary=$(grep -E '([0-9]+ (passed|failed|errors?|skipped|deselected|warnings?|tests? collected)|no tests ran).* in [0-9.]+s' "$logf" | tail -1 | sed -E 's/^=+ //; s/ =+$//')
    echo "chroot_tests: $distro ($versions): ${summary:-no pytest summary, exit $rc} [total $((SECONDS - t)) s]"
    return "$rc"
}

main() {
    [ $# -ge 1 ] || { sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 2; }
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts)"
    local distros=$1; shift
    [ "$distros" = all ] && distros=trixie,sid
    local tests=("$@")
    [ ${#tests[@]} -gt 0 ] || tests=("${DEFAULT_TESTS[@]}")
    [ -d "$SHARED" ] || log "warning: $SHARED is missing; the parity tests will fail or skip"
    mkdir -p "$CACHE/logs"
    local failed=0 summaries=() distro out
    # this run's output, for the summaries at the end (not a shared file: runs may overlap)
    out=$(mktemp)
    trap "rm -f '$out'" EXIT  # the file's name now: $out is gone when the trap runs
    for distro in ${distros//,/ }; do
        case $distro in trixie|sid) ;; *) die "unknown distro '$distro' (trixie, sid, all)";; esac
        local root="$CACHE/$distro"
        (
            # One run per chroot at a time: a second run waits instead of rebuilding under it.
            exec 9>"$CACHE/.$distro.lock"
            flock 9
            build_base "$distro" "$root"
            build_apt "$distro" "$root"
            build_venv "$distro" "$root"
            run_tests "$distro" "$root" "${tests[@]}"
        ) | tee "$out" || failed=1
        summaries+=("$(grep '^chroot_tests: ' "$out" | tail -1 || echo "chroot_tests: $distro: set-up failed, see above")")
    done
    printf '%s\n' "${summaries[@]}"
    return "$failed"
}

main "$@"
