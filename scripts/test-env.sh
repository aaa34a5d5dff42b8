#!/usr/bin/env bash
# Prepare (idempotently) everything the dockexec test suite needs, fully offline
# apart from the Debian package mirror:
#
#   1. a Docker daemon answering on /var/run/docker.sock (reused if already up,
#      else `dockerd --bridge=none --iptables=false --ip6tables=false` is started,
#      installing docker.io from apt first when needed);
#   2. dockexec-test/python:latest  - debootstrap'ed minimal Debian + Debian's full python3
#      (ctypes, multiprocessing and the whole standard library, like python:3-slim);
#   3. dockexec-test/busybox:latest - FROM scratch + Debian's static busybox, no python;
#   4. a loopback-only registry (Debian's docker-registry) on 127.0.0.1:5000 holding
#      127.0.0.1:5000/dockexec/python:latest and 127.0.0.1:5000/dockexec/busybox:latest
#      (local tags of those references are removed so tests really pull them).
#
# The names live in scripts/test-images.env (a variable of the same name in the environment
# overrides a line). Each image carries a `dockexec.test.image` label naming its recipe: an
# image built by an older recipe is rebuilt (and re-pushed) automatically.
#
# The library's default image, python:3-slim, is never pulled. With --tag-slim (or
# DOCKEXEC_TEST_TAG_SLIM=1; scripts/test.sh passes it) the python test image is tagged
# python:3-slim when that tag is absent, and the state dir records that this script made the
# tag; --untag-slim (and --down) removes it again, only if this script made it and it still
# points at the test image. A python:3-slim of your own is never touched.
#
# Nothing is ever pulled from / pushed to anything but 127.0.0.1:5000.
#
# Usage: scripts/test-env.sh [--tag-slim]   set up / verify the environment
#        scripts/test-env.sh --untag-slim   remove the python:3-slim tag this script made
#        scripts/test-env.sh --down         that, and stop the dockerd / registry THIS script
#                                           started
#
# State (pid files, logs, registry storage, the tag record) lives in
# ${TMPDIR:-/tmp}/dockexec-test-env.
# Optional overrides: DOCKEXEC_TEST_MIRROR, DOCKEXEC_TEST_SUITE (debootstrap source).
set -euo pipefail

# dockerd, debootstrap live in sbin; CI shells do not always have it in PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

SOCK=/var/run/docker.sock
# Make sure the docker CLI talks to the same daemon the library will use.
export DOCKER_HOST="unix://$SOCK"
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH

STATE="${TMPDIR:-/tmp}/dockexec-test-env"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# load_names FILE: KEY=VALUE lines of FILE into the environment, unless already set there.
load_names() {
    local k v
    while IFS='=' read -r k v; do
        [[ $k =~ ^[A-Z][A-Z0-9_]*$ ]] || continue
        [[ -n ${!k+set} ]] || export "$k=$v"
    done <"$1"
}
load_names "$HERE/test-images.env"

REG_ADDR=$DOCKEXEC_TEST_REGISTRY
REG_URL="http://$REG_ADDR"
PY_IMAGE=$DOCKEXEC_TEST_IMAGE
BB_IMAGE=$DOCKEXEC_TEST_BUSYBOX
SLIM_TAG=$DOCKEXEC_TEST_SLIM_TAG
# local image -> repository in the loopback registry (tag is always "latest")
declare -A REG_REPO=([$PY_IMAGE]=$DOCKEXEC_TEST_REGISTRY_PYTHON [$BB_IMAGE]=$DOCKEXEC_TEST_REGISTRY_BUSYBOX)
# The `dockexec.test.image` label of an image built by the current recipe. Change the value
# whenever a recipe below changes, so existing images are rebuilt.
#   python-2: Debian's full python3 (python-1, unlabelled, had python3-minimal: no ctypes)
STAMP_LABEL=dockexec.test.image
declare -A STAMP=([$PY_IMAGE]=python-2 [$BB_IMAGE]=busybox-1)
# The record that this script made $SLIM_TAG: "<tag> <image id>".
SLIM_RECORD="$STATE/slim-tag"
MANIFEST_ACCEPT='application/vnd.docker.distribution.manifest.v2+json'
DAEMON_WAIT=60
REGISTRY_WAIT=30

log() { echo "test-env: $*" >&2; }
die() { echo "test-env: ERROR: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- helpers ----

# GET a path of the Engine API over the unix socket; prints the body, fails on
# connection errors and non-2xx statuses. curl if present, else python3.
engine_get() {
    local path=$1
    if have curl; then
        curl -sf -m 5 --unix-socket "$SOCK" "http://localhost$path"
    elif have python3; then
        python3 - "$SOCK" "$path" <<'EOF'
import socket, sys
sock_path, path = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sock_path)
s.sendall(("GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n" % path).encode())
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
status = int(head.split(b" ", 2)[1])
sys.stdout.write(body.decode("utf-8", "replace"))
sys.exit(0 if 200 <= status < 300 else 1)
EOF
    else
        return 1
    fi
}

daemon_up() { [[ -S $SOCK ]] && [[ "$(engine_get /_ping 2>/dev/null)" == OK ]]; }

# image_exists REF (via the Engine API, so it works before the CLI is installed)
image_exists() { engine_get "/images/$1/json" >/dev/null 2>&1; }

# has_stamp REF [VALUE]: REF exists and carries our recipe label (with VALUE, if given).
has_stamp() {
    local json
    json=$(engine_get "/images/$1/json" 2>/dev/null) || return 1
    [[ $json == *"\"$STAMP_LABEL\":\"${2:-}"* ]]
}

# image_current REF: REF exists and was built by the current recipe.
image_current() { has_stamp "$1" "${STAMP[$1]}\""; }

# HTTP status code of GET $REG_URL$1 ("000" when nothing answers)
registry_status() {
    curl -s -o /dev/null -w '%{http_code}' -m 5 -H "Accept: $MANIFEST_ACCEPT" "$REG_URL$1" 2>/dev/null || true
}

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# The static busybox from busybox-static (the dynamic `busybox` package also ships
# /bin/busybox, which would not run in a FROM scratch image).
static_busybox() {
    local b
    for b in /bin/busybox /usr/bin/busybox; do
        if [[ -x $b ]] && pkg_installed busybox-static; then echo "$b"; return 0; fi
    done
    return 1
}

apt_install() {
    (($#)) || return 0
    have apt-get || die "need to install $* but apt-get is not available"
    [[ $(id -u) == 0 ]] || die "need to install $* but not running as root"
    log "installing with apt-get: $*"
    # Keep package maintainer scripts from starting services (docker.service with
    # default networking, docker-registry on 0.0.0.0:5000 with htpasswd auth): this
    # script starts exactly what it needs itself.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
    fi
    local rc=0 wait=(-o DPkg::Lock::Timeout=300)
    {
        apt-get "${wait[@]}" update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -q --no-install-recommends "$@"
    } >&2 || rc=$?
    ((added_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install $* failed (rc=$rc)"
}

# alive PID COMM: is PID a live process whose command name is COMM?
alive() { [[ -n ${1:-} && -r /proc/$1/comm && "$(cat "/proc/$1/comm" 2>/dev/null)" == "$2" ]]; }

# Debian mirror + suite for debootstrap, read from this machine's apt sources.
detect_mirror() {
    local mirror="" suite=""
    local f
    # deb822 (*.sources): first stanza of Types deb whose Suites has a plain codename
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        read -r mirror suite < <(awk '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && uris != "" && suites != "" && !found) {
                    n = split(suites, s, " ")
                    for (i = 1; i <= n; i++) if (s[i] !~ /[-\/]/) {
                        split(uris, u, " "); print u[1], s[i]; found = 1; break
                    }
                }
                types = uris = suites = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:"  { $1 = ""; types  = $0 }
            tolower($1) == "uris:"   { $1 = ""; uris   = $0 }
            tolower($1) == "suites:" { $1 = ""; suites = $0 }
            END { flush() }' "$f" | sed 's/^ *//') || true
        [[ -n $mirror ]] && break
    done
    # one-line format: deb [opts] URI SUITE COMPONENTS...
    if [[ -z $mirror ]]; then
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [[ -r $f ]] || continue
            read -r mirror suite < <(awk '
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    if ($(i+1) !~ /[-\/]/) { print $i, $(i+1); exit }
                }' "$f") || true
            [[ -n $mirror ]] && break
        done
    fi
    if [[ -z $suite ]]; then
        # shellcheck source=/dev/null
        suite=$( (. /etc/os-release && echo "${VERSION_CODENAME:-}") 2>/dev/null || true)
    fi
    mirror=${DOCKEXEC_TEST_MIRROR:-${mirror:-http://deb.debian.org/debian}}
    suite=${DOCKEXEC_TEST_SUITE:-${suite:-bookworm}}
    echo "$mirror $suite"
}

# import_dir DIR TAG CHANGES...: tar DIR up and `docker import` it as TAG.
import_dir() {
    local dir=$1 tag=$2
    shift 2
    local changes=() c
    for c in "$@"; do changes+=(-c "$c"); done
    tar --numeric-owner -C "$dir" -c . | docker import "${changes[@]}" - "$tag" >/dev/null
}

# spawn LOGFILE CMD...: start a long-lived background service, pid in SPAWNED_PID.
# setsid: own session, so it outlives this script and the CI step. stdin/stdout/stderr
# are redirected and every other inherited fd is closed, so nothing (a `| tee` in CI,
# our flock on fd 9) is held open by the service.
spawn() {
    local logf=$1
    shift
    (
        for fd in "/proc/$BASHPID/fd"/*; do
            fd=${fd##*/}
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        exec setsid nohup "$@" </dev/null >>"$logf" 2>&1
    ) &
    SPAWNED_PID=$!
}

# rm -rf that never crosses into a mount left behind by a failed debootstrap
remove_tree() {
    local d=$1 m
    [[ -d $d ]] || return 0
    for m in proc sys dev/pts dev; do
        if mountpoint -q "$d/$m" 2>/dev/null; then umount -l "$d/$m" 2>/dev/null || true; fi
    done
    rm -rf --one-file-system "$d"
}

WORKDIRS=()
cleanup() {
    local d
    for d in "${WORKDIRS[@]+"${WORKDIRS[@]}"}"; do remove_tree "$d"; done
}

# lock SECONDS: serialize runs of this script (parallel CI jobs on one machine). Everything
# that changes the machine happens under it: apt and its policy-rc.d guard (one run must not
# remove the guard while another run's apt is starting services), the daemon and registry
# start-up, the image builds, the tag and its record.
lock() {
    have flock || die "flock (util-linux) not found"
    exec 9>"$STATE/lock"
    if ! flock -n 9; then
        log "another test-env.sh run holds $STATE/lock, waiting (max $1 s)"
        flock -w "$1" 9 || die "could not lock $STATE/lock"
    fi
}

# image_id REF: the full image ID of REF, empty when there is no such image.
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

# replaced IMAGE: note that IMAGE exists but was built by an older recipe; its ID goes to
# OLD_IDS, for forget_old_images once nothing of ours points at it any more.
OLD_IDS=()
replaced() {
    local id
    id=$(image_id "$1")
    [[ -n $id ]] || return 0
    OLD_IDS+=("$id")
    log "$1 (${id:7:12}) is from an older recipe (want label $STAMP_LABEL=${STAMP[$1]}): rebuilding"
}

# forget_old_images: remove the builds this run replaced, unless something still uses or
# tags them (a running container keeps its image; a tag that is not ours stays).
forget_old_images() {
    local id tags
    for id in "${OLD_IDS[@]+"${OLD_IDS[@]}"}"; do
        tags=$(docker image inspect -f '{{len .RepoTags}}' "$id" 2>/dev/null) || continue
        if [[ $tags == 0 ]] && docker rmi "$id" >/dev/null 2>&1; then
            log "removed the replaced build ${id:7:12}"
        else
            log "kept the replaced build ${id:7:12} (still tagged or used by a container)"
        fi
    done
}

# ------------------------------------------------------------- python:3-slim ---

# The tag this script made, as recorded: "<tag> <image id>" (nothing when there is no record).
slim_record() { if [[ -r $SLIM_RECORD ]]; then cat "$SLIM_RECORD"; fi; }

# tag_slim ID: (re)point $SLIM_TAG at our python image and record that this script did.
tag_slim() {
    docker tag "$PY_IMAGE" "$SLIM_TAG"
    echo "$SLIM_TAG $1" >"$SLIM_RECORD"
}

# ensure_slim_tag WANTED: keep $SLIM_TAG on our python image when this script made it, make
# it when WANTED=1 and it is absent, and never touch anyone else's.
ensure_slim_tag() {
    local wanted=$1 py slim rec_tag="" rec_id=""
    py=$(image_id "$PY_IMAGE")
    slim=$(image_id "$SLIM_TAG")
    read -r rec_tag rec_id < <(slim_record) || true
    local undo="undo: bash scripts/test-env.sh --untag-slim"
    if [[ -n $rec_tag && $rec_tag != "$SLIM_TAG" ]]; then
        log "NOTE: this script tagged $rec_tag earlier (now DOCKEXEC_TEST_SLIM_TAG=$SLIM_TAG); --untag-slim still removes it"
    fi
    if [[ -z $slim ]]; then
        if ((wanted)); then
            tag_slim "$py"
            log "TAGGED $PY_IMAGE as $SLIM_TAG (the library's default image, for the README doctests); $undo"
        elif [[ $rec_tag == "$SLIM_TAG" ]]; then
            rm -f "$SLIM_RECORD"
            log "$SLIM_TAG (tagged by this script earlier) is gone; forgot the record"
        else
            log "$SLIM_TAG is absent: the README doctests and the library's default image need it;" \
                "--tag-slim (as scripts/test.sh passes) tags $PY_IMAGE as $SLIM_TAG"
        fi
    elif [[ $slim == "$py" ]]; then
        if [[ $rec_tag == "$SLIM_TAG" ]]; then
            log "$SLIM_TAG is $PY_IMAGE, tagged by this script ($undo)"
        elif ((wanted)); then
            # An earlier version of this script tagged it silently, or the record was lost
            # with the state dir: it names our own image, so it is ours to undo.
            tag_slim "$py"
            log "$SLIM_TAG already is $PY_IMAGE; recorded it as made by this script ($undo)"
        else
            log "$SLIM_TAG already is $PY_IMAGE, not recorded as made by this script;" \
                "--tag-slim records it, so that --untag-slim can remove it"
        fi
    elif [[ " ${OLD_IDS[*]-} " == *" $slim "* ]]; then
        # It named the build this run just replaced (an earlier version of this script made
        # the tag without asking): it follows the rebuild, and is now on record.
        tag_slim "$py"
        log "MOVED $SLIM_TAG from the replaced build to the rebuilt $PY_IMAGE; $undo"
    elif [[ $rec_tag == "$SLIM_TAG" && $slim == "$rec_id" ]] || has_stamp "$SLIM_TAG" python-; then
        # Ours, on an older build of the python image: follow the rebuild.
        if [[ $rec_tag == "$SLIM_TAG" ]] || ((wanted)); then
            tag_slim "$py"
            log "MOVED $SLIM_TAG to the rebuilt $PY_IMAGE; $undo"
        else
            log "$SLIM_TAG is an older build of $PY_IMAGE, not recorded as made by this script;" \
                "--tag-slim moves it to the current one"
        fi
    else
        log "$SLIM_TAG is another image (${slim:7:12}), not ours: left alone; the README doctests run it"
        if [[ $rec_tag == "$SLIM_TAG" ]]; then rm -f "$SLIM_RECORD"; fi
    fi
}

# untag_slim: remove the tag this script made, if it still points at our python image.
untag_slim() {
    local rec_tag="" rec_id="" slim py
    read -r rec_tag rec_id < <(slim_record) || true
    if [[ -z $rec_tag ]]; then
        log "no record of a tag made by this script in $SLIM_RECORD: nothing to untag"
        return 0
    fi
    if ! daemon_up || ! have docker; then
        log "no docker daemon or CLI on $SOCK: cannot remove $rec_tag now (record kept in $SLIM_RECORD)"
        return 0
    fi
    slim=$(image_id "$rec_tag")
    py=$(image_id "$PY_IMAGE")
    if [[ -z $slim ]]; then
        log "$rec_tag is already gone"
    elif [[ $slim == "$rec_id" || $slim == "$py" ]]; then
        # `docker rmi TAG` removes the tag only while $PY_IMAGE still names the image.
        docker rmi "$rec_tag" >/dev/null || die "docker rmi $rec_tag failed (record kept in $SLIM_RECORD)"
        log "UNTAGGED $rec_tag (this script had tagged it; $PY_IMAGE itself is kept)"
    else
        log "$rec_tag now points at another image (${slim:7:12}): not ours any more, left alone"
    fi
    rm -f "$SLIM_RECORD"
}

# ------------------------------------------------------------------ --down ---

stop_pidfile() { # stop_pidfile FILE COMM NAME
    local file=$1 comm=$2 name=$3 pid
    [[ -f $file ]] || { log "$name: not started by this script, leaving it alone"; return 0; }
    pid=$(cat "$file")
    if alive "$pid" "$comm"; then
        log "$name: stopping pid $pid"
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 30; i++)); do alive "$pid" "$comm" || break; sleep 1; done
        if alive "$pid" "$comm"; then
            log "$name: pid $pid still alive after 30 s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    else
        log "$name: pid $pid is no longer running"
    fi
    rm -f "$file"
}

down() {
    mkdir -p "$STATE"
    lock 600
    untag_slim
    stop_pidfile "$STATE/registry.pid" docker-registry registry
    stop_pidfile "$STATE/dockerd.pid" dockerd dockerd
    log "down"
}

# ------------------------------------------------------------------- steps ---

DAEMON_NOTE=""
REGISTRY_NOTE=""

install_missing_packages() {
    local pkgs=() up=0
    daemon_up && up=1
    if { ((up == 0)) && ! have dockerd; } || ! have docker; then pkgs+=(docker.io); fi
    have curl || pkgs+=(curl ca-certificates)
    if ((up == 0)) || ! image_current "$PY_IMAGE"; then
        have debootstrap || pkgs+=(debootstrap)
    fi
    if ((up == 0)) || ! image_current "$BB_IMAGE"; then
        static_busybox >/dev/null || pkgs+=(busybox-static)
    fi
    if ! have docker-registry && [[ $(registry_status /v2/) != 200 ]]; then
        pkgs+=(docker-registry)
    fi
    # scripts/test.sh's lint gate checks the scripts with it.
    have shellcheck || pkgs+=(shellcheck)
    apt_install "${pkgs[@]+"${pkgs[@]}"}"
}

ensure_daemon() {
    if daemon_up; then
        DAEMON_NOTE="reused"
        log "docker daemon answers on $SOCK, reusing it"
        return 0
    fi
    local pid="" dlog="$STATE/dockerd.log"
    # A dockerd that is still starting up (pidfile present, process alive)? Wait for it.
    if [[ -r /var/run/docker.pid ]] && alive "$(cat /var/run/docker.pid)" dockerd; then
        pid=$(cat /var/run/docker.pid)
        log "a dockerd (pid $pid) is running but not answering yet, waiting for it"
        DAEMON_NOTE="reused pid $pid"
        dlog=""
    else
        have dockerd || die "dockerd not found even after installing docker.io"
        : >"$dlog"
        log "starting dockerd --bridge=none --iptables=false --ip6tables=false (log: $dlog)"
        spawn "$dlog" dockerd --bridge=none --iptables=false --ip6tables=false
        pid=$SPAWNED_PID
        echo "$pid" >"$STATE/dockerd.pid"
        DAEMON_NOTE="started pid $pid"
    fi
    local i
    for ((i = 0; i < DAEMON_WAIT * 2; i++)); do
        daemon_up && break
        # (kill -0, not alive(): right after the fork the command name is still setsid/nohup)
        if [[ -n $dlog ]] && ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.5
    done
    if ! daemon_up; then
        log "docker daemon did not answer /_ping on $SOCK within ${DAEMON_WAIT}s"
        if [[ -n $dlog ]]; then
            log "last lines of $dlog:"
            tail -n 40 "$dlog" >&2 || true
            kill -0 "$pid" 2>/dev/null || rm -f "$STATE/dockerd.pid"
        fi
        exit 1
    fi
    # dockerd might have been started through a wrapper; record the real pid.
    if [[ -n $dlog && -r /var/run/docker.pid ]] && alive "$(cat /var/run/docker.pid)" dockerd; then
        printf "%s\n" "$(cat /var/run/docker.pid)" >"$STATE/dockerd.pid"
        DAEMON_NOTE="started pid $(cat /var/run/docker.pid)"
    fi
    log "docker daemon is up ($DAEMON_NOTE)"
}

ensure_python_image() {
    if image_current "$PY_IMAGE"; then
        log "$PY_IMAGE present ($STAMP_LABEL=${STAMP[$PY_IMAGE]})"
    else
        replaced "$PY_IMAGE"
        have debootstrap || die "debootstrap not found"
        local mirror suite rootfs t0=$SECONDS
        read -r mirror suite < <(detect_mirror)
        rootfs=$(mktemp -d "$STATE/rootfs.XXXXXX")
        WORKDIRS+=("$rootfs")
        # python3, not python3-minimal: ctypes, multiprocessing and the rest of the standard
        # library, as in the real python:3-slim.
        log "building $PY_IMAGE: debootstrap --variant=minbase --include=python3 $suite from $mirror (takes ~1.5 min)"
        if ! debootstrap --variant=minbase --include=python3 "$suite" "$rootfs" "$mirror" \
            >"$STATE/debootstrap.log" 2>&1; then
            log "debootstrap failed; last lines of $STATE/debootstrap.log:"
            tail -n 30 "$STATE/debootstrap.log" >&2 || true
            [[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
            exit 1
        fi
        # slim it down a little: no package caches/lists, docs or man pages
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
            "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
            "$rootfs"/usr/share/info/* "$rootfs"/debootstrap
        import_dir "$rootfs" "$PY_IMAGE" 'CMD ["/bin/sh"]' 'ENV LANG=C.UTF-8' \
            'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            "LABEL $STAMP_LABEL=${STAMP[$PY_IMAGE]}"
        remove_tree "$rootfs"
        log "built $PY_IMAGE in $((SECONDS - t0)) s"
    fi
    local out
    out=$(docker run --rm --network none "$PY_IMAGE" python3 -c 'import ctypes, multiprocessing; print(1)' 2>&1) || true
    [[ $out == 1 ]] || die "python3 cannot import ctypes and multiprocessing in $PY_IMAGE: $out"
    log "$PY_IMAGE runs python3 with ctypes and multiprocessing (--network none)"
}

ensure_busybox_image() {
    if image_current "$BB_IMAGE"; then
        log "$BB_IMAGE present ($STAMP_LABEL=${STAMP[$BB_IMAGE]})"
    else
        replaced "$BB_IMAGE"
        local bb dir applet
        bb=$(static_busybox) || die "static busybox (busybox-static) not found"
        dir=$(mktemp -d "$STATE/busybox.XXXXXX")
        WORKDIRS+=("$dir")
        log "building $BB_IMAGE from $bb (FROM scratch, static busybox only)"
        mkdir -p "$dir"/{bin,etc,root,tmp}
        chmod 1777 "$dir/tmp"
        chmod 700 "$dir/root"
        cp "$bb" "$dir/bin/busybox"
        # relative symlinks for every applet (busybox --install -s would point them
        # at the host's path of the binary)
        for applet in $("$dir/bin/busybox" --list); do
            [[ $applet == busybox || -e $dir/bin/$applet ]] || ln -s busybox "$dir/bin/$applet"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$dir/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
        import_dir "$dir" "$BB_IMAGE" 'CMD ["/bin/sh"]' \
            'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            "LABEL $STAMP_LABEL=${STAMP[$BB_IMAGE]}"
        remove_tree "$dir"
        log "built $BB_IMAGE"
    fi
    local out
    out=$(docker run --rm --network none "$BB_IMAGE" sh -c 'echo ok; command -v python3 python || true' 2>&1) || true
    [[ $out == ok ]] || die "$BB_IMAGE check failed (want just 'ok', got: $out)"
    log "$BB_IMAGE runs sh and has no python (--network none)"
}

ensure_registry() {
    local st
    st=$(registry_status /v2/)
    if [[ $st == 200 ]]; then
        REGISTRY_NOTE="reused"
        log "registry answers on $REG_URL/v2/, reusing it"
        return 0
    fi
    [[ $st == 000 ]] || die "something answers on $REG_URL/v2/ with HTTP $st (auth?); cannot use it as the test registry"
    have docker-registry || die "docker-registry not found"
    local conf="$STATE/registry.yml" rlog="$STATE/registry.log" pid
    mkdir -p "$STATE/registry-data"
    cat >"$conf" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STATE/registry-data
  delete:
    enabled: true
http:
  addr: $REG_ADDR
EOF
    : >"$rlog"
    log "starting docker-registry on $REG_ADDR (config: $conf, log: $rlog)"
    spawn "$rlog" docker-registry serve "$conf"
    pid=$SPAWNED_PID
    echo "$pid" >"$STATE/registry.pid"
    REGISTRY_NOTE="started pid $pid"
    local i
    for ((i = 0; i < REGISTRY_WAIT * 4; i++)); do
        [[ $(registry_status /v2/) == 200 ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if [[ $(registry_status /v2/) != 200 ]]; then
        log "registry did not answer on $REG_URL/v2/ within ${REGISTRY_WAIT}s; last lines of $rlog:"
        tail -n 30 "$rlog" >&2 || true
        kill -0 "$pid" 2>/dev/null || rm -f "$STATE/registry.pid"
        exit 1
    fi
    log "registry is up ($REGISTRY_NOTE)"
}

# push IMAGE to 127.0.0.1:5000/<repo>:latest unless the registry already has exactly it
push_image() {
    local image=$1 repo=${REG_REPO[$1]}
    local ref="$REG_ADDR/$repo:latest" id manifest
    id=$(docker image inspect -f '{{.Id}}' "$image")
    manifest=$(curl -sf -m 10 -H "Accept: $MANIFEST_ACCEPT" "$REG_URL/v2/$repo/manifests/latest" 2>/dev/null || true)
    # A schema2 manifest pushed by dockerd names the image config by its digest,
    # which is the local image ID: same ID => nothing to do.
    if [[ -n $manifest && $manifest == *"\"$id\""* ]]; then
        log "$ref already in the registry (config $id), skipping push"
    else
        [[ -n $manifest ]] && log "$ref in the registry is a different image, re-pushing"
        log "pushing $image as $ref"
        docker tag "$image" "$ref"
        docker push "$ref" >"$STATE/push.log" 2>&1 || {
            tail -n 20 "$STATE/push.log" >&2
            docker rmi "$ref" >/dev/null 2>&1 || true
            die "docker push $ref failed"
        }
    fi
    # Only the tag goes away (the image keeps its dockexec-test/... tag), so tests
    # that pull $ref really pull it from the registry.
    if image_exists "$ref"; then
        docker rmi "$ref" >/dev/null
        log "removed local tag $ref"
    fi
}

summary() {
    local py_id bb_id slim_id
    py_id=$(image_id "$PY_IMAGE")
    bb_id=$(image_id "$BB_IMAGE")
    slim_id=$(image_id "$SLIM_TAG")
    slim_id=${slim_id:+${slim_id:7:12}}
    log "ready in $((SECONDS)) s: daemon $SOCK ($DAEMON_NOTE); images $PY_IMAGE=${py_id:7:12}" \
        "$SLIM_TAG=${slim_id:-absent} $BB_IMAGE=${bb_id:7:12};" \
        "registry $REG_ADDR ($REGISTRY_NOTE) with ${REG_REPO[$PY_IMAGE]}:latest ${REG_REPO[$BB_IMAGE]}:latest"
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

main() {
    local tag_slim=0 action=up
    case "${DOCKEXEC_TEST_TAG_SLIM:-}" in
    "" | 0) ;;
    1) tag_slim=1 ;;
    *) die "DOCKEXEC_TEST_TAG_SLIM must be 1 or 0, not '$DOCKEXEC_TEST_TAG_SLIM'" ;;
    esac
    while (($#)); do
        case "$1" in
        --tag-slim) tag_slim=1 ;;
        --untag-slim) action=untag ;;
        --down) action=down ;;
        -h | --help) usage; return ;;
        *) die "unknown argument: $1 (usage: $0 [--tag-slim | --untag-slim | --down])" ;;
        esac
        shift
    done
    case "$REG_ADDR" in
    127.0.0.1:* | localhost:*) ;;
    *) die "DOCKEXEC_TEST_REGISTRY must be a loopback address (127.0.0.1:PORT), not $REG_ADDR" ;;
    esac
    mkdir -p "$STATE"
    case $action in
    down) down; return ;;
    untag) lock 600; untag_slim; return ;;
    esac
    trap cleanup EXIT
    if ! have flock; then
        # flock is util-linux's (essential on Debian, so this is rare). There is no lock to
        # take yet: install util-linux alone, which starts no service, then lock.
        log "flock not found: installing util-linux before taking the lock"
        apt_install util-linux
    fi
    lock 900
    install_missing_packages
    ensure_daemon
    have docker || die "docker CLI not found"
    ensure_python_image
    ensure_slim_tag "$tag_slim"
    ensure_busybox_image
    forget_old_images
    ensure_registry
    push_image "$PY_IMAGE"
    push_image "$BB_IMAGE"
    summary
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
