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
#      (local tags of those references are removed so tests really pull them);
#   5. the remote engines of the engine tests (issue 16), all on loopback:
#      - "engine2", a second, private dockerd (own data-root under the state dir, exec-root
#        /run/dockexec-test/engine2-exec, containerd namespace dockexec-engine2, no bridge, no
#        iptables) on unix:///run/dockexec-test/engine2.sock and, with --tlsverify (client
#        certificates required), on tcp://127.0.0.1:23760 (DOCKEXEC_TEST_ENGINE2_TLS_PORT),
#        holding the test images (and python:3-slim on the python image);
#      - openssl-made certificates in the DOCKER_CERT_PATH layout (ca.pem, cert.pem, key.pem):
#        tls/client, and tls/wrong-ca (another CA's ca.pem, a valid client cert and key);
#        remade when missing or expiring within a day;
#      - an sshd on 127.0.0.1:22220 (DOCKEXEC_TEST_SSHD_PORT; own config, host key and
#        authorized_keys, key auth only) with a throwaway ed25519 client key, a known_hosts and
#        an `ssh -F` config, checked to reach engine2 through `docker system dial-stdio`; its
#        sessions get DOCKER_HOST=engine2, so the docker CLI's path-less ssh:// lands there
#        too, and ssh/bin/ssh (first in a child's PATH) is the system ssh with that config;
#      - every fact the tests need in <state dir>/engines.env (tests/common/engines.rs).
#   6. Podman (issue 17): Debian's podman (with catatonit, its init) and a rootful
#      `podman system service --time=0` on unix:///run/dockexec-test/podman.sock, with its own
#      storage under the state dir, runroot /run/dockexec-test/podman-run, the cgroupfs
#      manager, file events and a registries.conf of its own (no search registries, the
#      loopback registry as insecure); the test images loaded into it from the Docker daemon
#      offline (docker save | docker --host <podman> load: the same image IDs), python:3-slim
#      tagged on the python image; DOCKEXEC_TEST_PODMAN_SOCK/_HOST appended to engines.env;
#      and a rootless one (user dockexec-podman, subuid ranges, no images) on
#      /run/dockexec-test/podman-rootless/podman/podman.sock (DOCKEXEC_TEST_PODMAN_ROOTLESS_HOST).
#      DOCKEXEC_TEST_PODMAN=0 skips it.
#   7. gVisor (issue 22): Debian's `runsc`, registered on engine2 as the runtime `runsc` with
#      runtimeArgs --network=none --platform=ptrace (engine2's daemon.json; a running engine2
#      reloads it on SIGHUP, no restart), checked by running a container under it; its facts
#      go to engines.env too.
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
#                                           started (engine2, the sshd and podman included)
#        scripts/test-env.sh --down-podman  stop only the podman service (and its containers)
#
# State (pid files, logs, registry storage, the tag record, engine2's data, certificates,
# ssh keys, engines.env) lives in
# ${TMPDIR:-/tmp}/dockexec-test-env.
# Optional overrides: DOCKEXEC_TEST_MIRROR, DOCKEXEC_TEST_SUITE (debootstrap source),
# DOCKEXEC_TEST_ENGINE2_TLS_PORT, DOCKEXEC_TEST_SSHD_PORT.
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
MPL_IMAGE=$DOCKEXEC_TEST_MPL_IMAGE
SLIM_TAG=$DOCKEXEC_TEST_SLIM_TAG
# local image -> repository in the loopback registry (tag is always "latest")
declare -A REG_REPO=([$PY_IMAGE]=$DOCKEXEC_TEST_REGISTRY_PYTHON [$BB_IMAGE]=$DOCKEXEC_TEST_REGISTRY_BUSYBOX)
# The `dockexec.test.image` label of an image built by the current recipe. Change the value
# whenever a recipe below changes, so existing images are rebuilt.
#   python-2: Debian's full python3 (python-1, unlabelled, had python3-minimal: no ctypes)
STAMP_LABEL=dockexec.test.image
#   mpl-1: the python image plus Debian's python3-matplotlib (issue 19's figure tests only)
declare -A STAMP=([$PY_IMAGE]=python-2 [$BB_IMAGE]=busybox-1 [$MPL_IMAGE]=mpl-1)
# The record that this script made $SLIM_TAG: "<tag> <image id>".
SLIM_RECORD="$STATE/slim-tag"
MANIFEST_ACCEPT='application/vnd.docker.distribution.manifest.v2+json'
DAEMON_WAIT=60
REGISTRY_WAIT=30
# engine2, its TLS certificates and the sshd (issue 16); see ensure_engines.
E2_RUN=/run/dockexec-test
E2_SOCK="$E2_RUN/engine2.sock"
E2_EXEC="$E2_RUN/engine2-exec"
E2_DIR="$STATE/engine2"
E2_DATA="$E2_DIR/data"
E2_PID="$STATE/engine2.pid"
E2_LOG="$STATE/engine2.log"
E2_TLS_PORT=${DOCKEXEC_TEST_ENGINE2_TLS_PORT:-23760}
TLS_DIR="$STATE/tls"
CERT_DAYS=365
SSH_BIN=""
SSH_DIR="$STATE/ssh"
SSH_CONFIG="$SSH_DIR/ssh_config"
SSHD_CONF="$SSH_DIR/sshd_config"
SSHD_PID="$SSH_DIR/sshd.pid"
SSHD_LOG="$STATE/sshd.log"
SSHD_PORT=${DOCKEXEC_TEST_SSHD_PORT:-22220}
ENGINES_ENV="$STATE/engines.env"
# --- Podman (issue 17); see ensure_podman ---
PODMAN_SOCK="$E2_RUN/podman.sock"
PODMAN_RUN="$E2_RUN/podman-run"
PODMAN_TMP="$E2_RUN/podman-tmp"
PODMAN_DIR="$STATE/podman"
PODMAN_PID="$STATE/podman.pid"
PODMAN_LOG="$STATE/podman.log"
PODMAN_NOTE="skipped"
PODMAN_RL_USER=dockexec-podman
PODMAN_RL_RUN="$E2_RUN/podman-rootless"
PODMAN_RL_SOCK="$PODMAN_RL_RUN/podman/podman.sock"
PODMAN_RL_PID="$STATE/podman-rootless.pid"
# --- end Podman ---

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
# our flock on fd 9) is held open by the service. It runs in /: a service whose working dir
# was a checkout that is later removed breaks (Podman's conmon: "Failed to get working
# directory", every start a 409 "write child: broken pipe").
spawn() {
    local logf=$1
    shift
    (
        for fd in "/proc/$BASHPID/fd"/*; do
            fd=${fd##*/}
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        cd / || exit 1
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

# ----------------------------------------------- engine2, TLS, sshd (issue 16) ---
#
# A second, private dockerd ("engine2") for the remote-engine tests: its own data-root,
# exec-root, pid file and containerd namespace (dockerd starts its own containerd under the
# exec-root), no bridge, no iptables. It listens on the unix socket $E2_SOCK and, with
# --tlsverify (client certificates required), on 127.0.0.1:$E2_TLS_PORT. An sshd on
# 127.0.0.1:$SSHD_PORT (own config, host key and authorized_keys, key auth only) lets
# `ssh ... docker --host unix://$E2_SOCK system dial-stdio` reach it. The tests read every fact
# from $ENGINES_ENV.

# ssh_ping: /_ping through ssh and dial-stdio to engine2; prints the raw HTTP response.
# (Was: does the sshd answer our key, and does dial-stdio reach engine2 through it?
ssh_ping() {
    printf 'GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n' |
        timeout 30 ssh -F "$SSH_CONFIG" -p "$SSHD_PORT" root@127.0.0.1 \
            docker --host "unix://$E2_SOCK" system dial-stdio 2>>"$SSH_DIR/ssh-check.log"
}

# e2_ping: engine2's unix socket answers /_ping.
e2_ping() { [[ -S $E2_SOCK ]] && [[ "$(curl -sf -m 5 --unix-socket "$E2_SOCK" http://d/_ping 2>/dev/null)" == OK ]]; }

# tls_ping CERTDIR: /_ping over TLS with CERTDIR's ca.pem (and its cert.pem/key.pem, if any).
tls_ping() {
    local d=$1 args=(--cacert "$1/ca.pem")
    [[ -f $d/cert.pem ]] && args+=(--cert "$d/cert.pem" --key "$d/key.pem")
    [[ "$(curl -sf -m 5 "${args[@]}" "https://127.0.0.1:$E2_TLS_PORT/_ping" 2>/dev/null)" == OK ]]
}

# port_busy PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

e2docker() { docker --host "unix://$E2_SOCK" "$@"; }

# cert_ok CERT CA: CERT exists, is signed by CA and is valid for at least one more day.
cert_ok() {
    [[ -s $1 && -s $2 ]] && openssl x509 -checkend 86400 -noout -in "$1" >/dev/null 2>&1 &&
        openssl verify -CAfile "$2" "$1" >/dev/null 2>&1
}

# new_ca DIR CN: a self-signed CA (P-256) as DIR/ca.pem + DIR/ca-key.pem.
new_ca() {
    mkdir -p "$1"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1/ca-key.pem" 2>/dev/null
    openssl req -x509 -new -key "$1/ca-key.pem" -sha256 -days "$CERT_DAYS" -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" -out "$1/ca.pem"
}

# new_leaf CA_DIR OUT_DIR CN EXTENSIONS: OUT_DIR/{ca.pem,cert.pem,key.pem}, signed by CA_DIR.
new_leaf() {
    local ca=$1 out=$2 cn=$3 ext=$4
    mkdir -p "$out"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/key.pem" 2>/dev/null
    openssl req -new -key "$out/key.pem" -subj "/CN=$cn" -out "$out/req.csr"
    printf '%s\n' "$ext" >"$out/ext.cnf"
    openssl x509 -req -in "$out/req.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca-key.pem" \
        -set_serial "0x$(openssl rand -hex 16)" -sha256 -days "$CERT_DAYS" \
        -extfile "$out/ext.cnf" -out "$out/cert.pem" 2>/dev/null
    rm -f "$out/req.csr" "$out/ext.cnf"
    cp "$ca/ca.pem" "$out/ca.pem"
}

# ensure_certs: CA, server (SAN IP:127.0.0.1, DNS:localhost), client, and the "wrong CA" dir
# (another CA's ca.pem + a valid client cert/key); all regenerated when one is missing,
# expires within a day or does not verify. Sets CERTS_NEW=1 when it made new ones.
CERTS_NEW=0
ensure_certs() {
    if cert_ok "$TLS_DIR/server/cert.pem" "$TLS_DIR/ca/ca.pem" &&
        cert_ok "$TLS_DIR/client/cert.pem" "$TLS_DIR/ca/ca.pem" &&
        cert_ok "$TLS_DIR/other-ca/ca.pem" "$TLS_DIR/other-ca/ca.pem" &&
        cert_ok "$TLS_DIR/wrong-ca/cert.pem" "$TLS_DIR/ca/ca.pem" &&
        [[ -s $TLS_DIR/client/key.pem && -s $TLS_DIR/server/key.pem && -s $TLS_DIR/wrong-ca/key.pem ]] &&
        cmp -s "$TLS_DIR/wrong-ca/ca.pem" "$TLS_DIR/other-ca/ca.pem"; then
        log "TLS certificates in $TLS_DIR are valid, reusing them"
        return 0
    fi
    log "making TLS certificates in $TLS_DIR (openssl, P-256, $CERT_DAYS days)"
    rm -rf "$TLS_DIR"
    (
        umask 077
        new_ca "$TLS_DIR/ca" "dockexec test CA"
        new_ca "$TLS_DIR/other-ca" "dockexec test wrong CA"
        new_leaf "$TLS_DIR/ca" "$TLS_DIR/server" localhost \
            "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
        new_leaf "$TLS_DIR/ca" "$TLS_DIR/client" dockexec-test-client \
            "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
        # Only the CA is wrong: a valid client identity, and another CA to check the server.
        mkdir -p "$TLS_DIR/wrong-ca"
        cp "$TLS_DIR/client/cert.pem" "$TLS_DIR/client/key.pem" "$TLS_DIR/wrong-ca/"
        cp "$TLS_DIR/other-ca/ca.pem" "$TLS_DIR/wrong-ca/ca.pem"
    ) || die "making the TLS certificates failed"
    CERTS_NEW=1
}

# e2_owned: the engine2 pid file names a live dockerd.
e2_owned() { [[ -r $E2_PID ]] && alive "$(cat "$E2_PID")" dockerd; }

# ensure_engine2: reuse a running engine2 (restarted when its certificates were remade or its
# TLS port does not accept our client), else start it.
ENGINE2_NOTE=""
ensure_engine2() {
    if e2_owned && ((CERTS_NEW == 0)) && e2_ping && tls_ping "$TLS_DIR/client"; then
        ENGINE2_NOTE="reused pid $(cat "$E2_PID")"
        log "engine2 answers on $E2_SOCK and tcp://127.0.0.1:$E2_TLS_PORT (TLS), reusing it"
        return 0
    fi
    if e2_owned; then
        log "engine2 needs a restart (new certificates, or it does not answer as it should)"
        stop_engine2
    elif e2_ping; then
        die "something this script did not start answers on $E2_SOCK (no live pid in $E2_PID); stop it first"
    else
        # A dead engine2's pid file (its pid may be another process by now, which dockerd
        # would take for a running daemon) and whatever that engine2 left behind.
        rm -f "$E2_PID"
        clean_engine2_remains
    fi
    port_busy "$E2_TLS_PORT" &&
        die "127.0.0.1:$E2_TLS_PORT is taken by something else (choose another with DOCKEXEC_TEST_ENGINE2_TLS_PORT)"
    mkdir -p "$E2_RUN" "$E2_EXEC" "$E2_DATA"
    chmod 755 "$E2_RUN"
    rm -f "$E2_SOCK"
    # Its own config file (/etc/docker/daemon.json is the shared daemon's): runsc registered.
    e2_daemon_json >"$E2_DIR/daemon.json"
    : >"$E2_LOG"
    log "starting engine2: dockerd on unix://$E2_SOCK and tcp://127.0.0.1:$E2_TLS_PORT (--tlsverify; log: $E2_LOG)"
    spawn "$E2_LOG" dockerd --config-file "$E2_DIR/daemon.json" \
        --data-root "$E2_DATA" --exec-root "$E2_EXEC" --pidfile "$E2_PID" \
        --containerd-namespace dockexec-engine2 --containerd-plugins-namespace dockexec-engine2-plugins \
        --bridge=none --iptables=false --ip6tables=false \
        -H "unix://$E2_SOCK" -H "tcp://127.0.0.1:$E2_TLS_PORT" \
        --tlsverify --tlscacert "$TLS_DIR/server/ca.pem" \
        --tlscert "$TLS_DIR/server/cert.pem" --tlskey "$TLS_DIR/server/key.pem"
    local pid=$SPAWNED_PID i
    for ((i = 0; i < DAEMON_WAIT * 4; i++)); do
        e2_ping && tls_ping "$TLS_DIR/client" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if ! e2_ping || ! tls_ping "$TLS_DIR/client"; then
        log "engine2 did not answer /_ping on $E2_SOCK and over TLS within ${DAEMON_WAIT}s; last lines of $E2_LOG:"
        tail -n 40 "$E2_LOG" >&2 || true
        exit 1
    fi
    ENGINE2_NOTE="started pid $(cat "$E2_PID")"
    log "engine2 is up ($ENGINE2_NOTE)"
}

# check_tls: the TLS port requires a client certificate and rejects another CA's server check.
check_tls() {
    tls_ping "$TLS_DIR/client" || die "engine2 does not answer over TLS with the client certificate"
    local nocert
    nocert=$(mktemp -d "$STATE/nocert.XXXXXX")
    WORKDIRS+=("$nocert")
    cp "$TLS_DIR/ca/ca.pem" "$nocert/"
    tls_ping "$nocert" && die "engine2 answers over TLS without a client certificate (want --tlsverify)"
    tls_ping "$TLS_DIR/wrong-ca" && die "the server certificate verifies against the wrong CA"
    remove_tree "$nocert"
    log "engine2 TLS: client certificate required; the wrong CA is refused"
}

# ensure_engine2_images: the test images on engine2 with the shared daemon's image IDs, and
# $SLIM_TAG on the python image (engine2 is ours alone, so the tag is always ours).
ensure_engine2_images() {
    local img want=() t0=$SECONDS
    for img in "$PY_IMAGE" "$BB_IMAGE"; do
        [[ "$(e2docker image inspect -f '{{.Id}}' "$img" 2>/dev/null)" == "$(image_id "$img")" ]] || want+=("$img")
    done
    if ((${#want[@]})); then
        log "loading ${want[*]} into engine2 (docker save | docker --host unix://$E2_SOCK load)"
        docker save "${want[@]}" | e2docker load >"$E2_DIR/load.log" 2>&1 ||
            { tail -n 20 "$E2_DIR/load.log" >&2; die "loading the test images into engine2 failed"; }
        log "loaded ${want[*]} into engine2 in $((SECONDS - t0)) s"
        # Builds the load replaced are untagged now; engine2 is ours alone, so drop them.
        e2docker image prune -f >/dev/null 2>&1 || true
    else
        log "engine2 has $PY_IMAGE and $BB_IMAGE"
    fi
    if [[ "$(e2docker image inspect -f '{{.Id}}' "$SLIM_TAG" 2>/dev/null)" != "$(image_id "$PY_IMAGE")" ]]; then
        e2docker tag "$PY_IMAGE" "$SLIM_TAG"
        log "engine2: tagged $PY_IMAGE as $SLIM_TAG"
    fi
}

# sshd_config_text: our sshd's whole configuration.
sshd_config_text() {
    # UsePAM no: key auth needs no PAM, and PAM's session modules (pam_loginuid) fail in
    # containers. Without PAM sshd refuses a locked account ("!" password), so then PAM it is.
    local use_pam=no
    [[ "$(getent shadow root 2>/dev/null | cut -d: -f2)" == '!'* ]] && use_pam=yes
    cat <<EOF
# dockexec test sshd (scripts/test-env.sh): loopback only, key auth only.
Port $SSHD_PORT
ListenAddress 127.0.0.1
AddressFamily inet
HostKey $SSH_DIR/ssh_host_ed25519_key
PidFile $SSH_DIR/sshd.pid
AuthorizedKeysFile $SSH_DIR/authorized_keys
AuthorizedPrincipalsFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
PermitEmptyPasswords no
PermitRootLogin prohibit-password
AllowUsers root
UsePAM $use_pam
# The state dir may live under the world-writable /tmp, which StrictModes rejects.
StrictModes no
X11Forwarding no
AllowAgentForwarding no
AllowTcpForwarding no
PermitTunnel no
PrintMotd no
PrintLastLog no
UseDNS no
# Tests open many connections at once (one per hijacked stream): no random early drops.
MaxStartups 200
LogLevel VERBOSE
# A plain "docker system dial-stdio" (the docker CLI's ssh://host form, which takes no socket
# path) reaches engine2 too, never the shared daemon.
SetEnv DOCKER_HOST=unix://$E2_SOCK
EOF
}

ensure_ssh_keys() {
    SSH_BIN=$(command -v ssh) || die "ssh not found even after installing openssh-client"
    [[ $SSH_BIN != "$SSH_DIR/bin/ssh" ]] || die "PATH finds our own ssh wrapper $SSH_BIN first; run with the system ssh in PATH"
    mkdir -p "$SSH_DIR"
    chmod 700 "$SSH_DIR"
    if [[ ! -s $SSH_DIR/ssh_host_ed25519_key || ! -s $SSH_DIR/ssh_host_ed25519_key.pub ]]; then
        rm -f "$SSH_DIR"/ssh_host_ed25519_key*
        ssh-keygen -q -t ed25519 -N '' -C dockexec-test-sshd -f "$SSH_DIR/ssh_host_ed25519_key"
        log "made the sshd host key $SSH_DIR/ssh_host_ed25519_key"
    fi
    if [[ ! -s $SSH_DIR/id_ed25519 || ! -s $SSH_DIR/id_ed25519.pub ]]; then
        rm -f "$SSH_DIR"/id_ed25519*
        ssh-keygen -q -t ed25519 -N '' -C dockexec-test-client -f "$SSH_DIR/id_ed25519"
        log "made the client key $SSH_DIR/id_ed25519"
    fi
    (
        umask 077
        cp "$SSH_DIR/id_ed25519.pub" "$SSH_DIR/authorized_keys"
        echo "[127.0.0.1]:$SSHD_PORT $(cut -d' ' -f1,2 "$SSH_DIR/ssh_host_ed25519_key.pub")" >"$SSH_DIR/known_hosts"
        cat >"$SSH_CONFIG" <<EOF
# ssh -F $SSH_CONFIG -p $SSHD_PORT root@127.0.0.1 (scripts/test-env.sh)
Host 127.0.0.1 localhost dockexec-test-engine2
    HostName 127.0.0.1
    Port $SSHD_PORT
    User root
    IdentityFile $SSH_DIR/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $SSH_DIR/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    CheckHostIP no
    BatchMode yes
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    ConnectTimeout 10
EOF
        # For tools that run a plain `ssh` (the docker CLI's ssh:// helper, the library's
        # default): this dir first in PATH makes them use the config above. (ssh reads
        # ~/.ssh/config from the passwd entry's home, not $HOME, so HOME cannot do it.)
        mkdir -p "$SSH_DIR/bin"
        printf '#!/bin/sh\n# scripts/test-env.sh: the system ssh with the test config\nexec %q -F %q "$@"\n' \
            "$SSH_BIN" "$SSH_CONFIG" >"$SSH_DIR/bin/ssh"
        chmod 755 "$SSH_DIR/bin" "$SSH_DIR/bin/ssh"
    )
}

# sshd_owned: the sshd pid file names a live sshd.
sshd_owned() { [[ -r $SSHD_PID ]] && alive "$(cat "$SSHD_PID")" sshd; }

SSHD_NOTE=""
ensure_sshd() {
    local sshd_bin conf_new="$SSH_DIR/sshd_config.new"
    sshd_bin=$(command -v sshd) || die "sshd not found even after installing openssh-server"
    ensure_ssh_keys
    sshd_config_text >"$conf_new"
    # OpenSSH >= 9.8 penalizes a source address for failed logins by refusing it for a while;
    # the failure tests fail logins on purpose from 127.0.0.1, and later tests must not pay.
    if "$sshd_bin" -t -f "$conf_new" -o PerSourcePenalties=no >/dev/null 2>&1; then
        echo "PerSourcePenalties no" >>"$conf_new"
    fi
    if sshd_owned && cmp -s "$conf_new" "$SSHD_CONF" && [[ "$(ssh_ping)" == *$'\r\n\r\nOK' ]]; then
        rm -f "$conf_new"
        SSHD_NOTE="reused pid $(cat "$SSHD_PID")"
        # (that was check_ssh's whole check)
        log "sshd answers on 127.0.0.1:$SSHD_PORT and reaches engine2 through dial-stdio, reusing it"
        return 0
    fi
    if sshd_owned; then
        log "sshd needs a restart (new config, or it does not reach engine2)"
        stop_pidfile "$SSHD_PID" sshd sshd
    fi
    mv "$conf_new" "$SSHD_CONF"
    port_busy "$SSHD_PORT" &&
        die "127.0.0.1:$SSHD_PORT is taken by something else (choose another with DOCKEXEC_TEST_SSHD_PORT)"
    # sshd's privilege separation directory (Debian's service makes it at boot)
    mkdir -p /run/sshd
    chmod 755 /run/sshd
    "$sshd_bin" -t -f "$SSHD_CONF" || die "sshd rejects its config $SSHD_CONF"
    : >"$SSHD_LOG"
    log "starting sshd on 127.0.0.1:$SSHD_PORT (config: $SSHD_CONF, log: $SSHD_LOG)"
    # sshd re-executes itself, hence the absolute path; -D: no fork, -e: log to stderr.
    spawn "$SSHD_LOG" "$sshd_bin" -D -e -f "$SSHD_CONF"
    local pid=$SPAWNED_PID i
    for ((i = 0; i < 40; i++)); do
        port_busy "$SSHD_PORT" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    port_busy "$SSHD_PORT" || { tail -n 20 "$SSHD_LOG" >&2; die "sshd did not listen on 127.0.0.1:$SSHD_PORT"; }
    SSHD_NOTE="started pid $pid"
    log "sshd is up ($SSHD_NOTE)"
    check_ssh
}

# check_ssh: the whole ssh path the tests use: our key, our known_hosts, the docker CLI in
# root's non-interactive PATH on the far side, and dial-stdio to engine2.
check_ssh() {
    local out
    : >"$SSH_DIR/ssh-check.log"
    out=$(ssh_ping) || true
    if [[ $out != *$'\r\n\r\nOK' ]]; then
        log "ssh ... docker --host unix://$E2_SOCK system dial-stdio did not answer /_ping with OK; got:"
        printf '%s\n' "$out" | head -n 20 >&2
        tail -n 20 "$SSH_DIR/ssh-check.log" >&2 || true
        log "last lines of $SSHD_LOG:"
        tail -n 20 "$SSHD_LOG" >&2 || true
        exit 1
    fi
    log "ssh -F $SSH_CONFIG root@127.0.0.1:$SSHD_PORT docker --host unix://$E2_SOCK system dial-stdio reaches engine2 (/_ping: OK)"
    # The docker CLI's own ssh:// (no socket path, plain `ssh` from PATH) lands on engine2.
    out=$(PATH="$SSH_DIR/bin:$PATH" DOCKER_HOST="ssh://root@127.0.0.1:$SSHD_PORT" \
        timeout 60 docker info --format '{{.DockerRootDir}}' 2>&1) || true
    [[ $out == "$E2_DATA" ]] ||
        die "DOCKER_HOST=ssh://root@127.0.0.1:$SSHD_PORT docker info (PATH=$SSH_DIR/bin:...) did not reach engine2 ($E2_DATA): $out"
    log "DOCKER_HOST=ssh://root@127.0.0.1:$SSHD_PORT docker (with $SSH_DIR/bin first in PATH) reaches engine2"
}

write_engines_env() {
    local tmp="$ENGINES_ENV.tmp"
    cat >"$tmp" <<EOF
# Written by scripts/test-env.sh: the second engine (issue 16). KEY=VALUE, no quotes.
DOCKEXEC_TEST_ENGINE2_SOCK=$E2_SOCK
DOCKEXEC_TEST_ENGINE2_HOST=unix://$E2_SOCK
DOCKEXEC_TEST_TLS_HOST=tcp://127.0.0.1:$E2_TLS_PORT
DOCKEXEC_TEST_TLS_CERTS=$TLS_DIR/client
DOCKEXEC_TEST_WRONG_CA_CERTS=$TLS_DIR/wrong-ca
DOCKEXEC_TEST_SSH_HOST=ssh://root@127.0.0.1:$SSHD_PORT$E2_SOCK
DOCKEXEC_TEST_SSH_CONFIG=$SSH_CONFIG
DOCKEXEC_TEST_SSH_KEY=$SSH_DIR/id_ed25519
DOCKEXEC_TEST_SSH_KNOWN_HOSTS=$SSH_DIR/known_hosts
DOCKEXEC_TEST_SSH_HOST_CLI=ssh://root@127.0.0.1:$SSHD_PORT
DOCKEXEC_TEST_SSH_BIN_DIR=$SSH_DIR/bin
EOF
    mv "$tmp" "$ENGINES_ENV"
}

ensure_engines() {
    have openssl || die "openssl not found"
    mkdir -p "$E2_DIR"
    ensure_certs
    ensure_engine2
    check_tls
    ensure_engine2_images
    ensure_sshd
    ensure_gvisor
    write_engines_env
    write_gvisor_env
}

# ---------------------------------------------------------- gVisor (issue 22) ---
#
# runsc is registered on engine2 (which already holds the test images) rather than on a third
# daemon: a daemon reloads its `runtimes` on SIGHUP, so a running engine2 takes the new config
# without a restart, and the other lanes' containers keep running. Containers under runsc
# need --network=none in the runtime args (runsc refuses the root network namespace of
# --network none otherwise) and --platform=ptrace (no KVM here).
GVISOR_RUNTIME=runsc
GVISOR_NOTE=""

# e2_daemon_json: engine2's whole config.
e2_daemon_json() {
    local runsc
    runsc=$(command -v runsc 2>/dev/null || echo /usr/bin/runsc)
    cat <<EOF
{
  "runtimes": {
    "$GVISOR_RUNTIME": {
      "path": "$runsc",
      "runtimeArgs": ["--network=none", "--platform=ptrace"]
    }
  }
}
EOF
}

# e2_has_runtime NAME: engine2's /info lists the runtime NAME.
e2_has_runtime() {
    # shellcheck disable=SC2016 # a Go template, not a shell expansion
    [[ " $(e2docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}' 2>/dev/null) " == *" $1 "* ]]
}

# ensure_gvisor: engine2's config registers runsc (rewritten and reloaded with SIGHUP when it
# differs), and a container runs under it with gVisor's kernel.
ensure_gvisor() {
    have runsc || die "runsc not found even after installing it (apt install runsc)"
    local want conf="$E2_DIR/daemon.json" i out host_kernel
    want=$(e2_daemon_json)
    if [[ "$(cat "$conf" 2>/dev/null)" != "$want" ]] || ! e2_has_runtime "$GVISOR_RUNTIME"; then
        printf '%s\n' "$want" >"$conf"
        e2_owned || die "engine2 is not ours to reload (no live pid in $E2_PID)"
        log "gVisor: registering $GVISOR_RUNTIME on engine2 ($conf; SIGHUP, no restart)"
        kill -HUP "$(cat "$E2_PID")"
        for ((i = 0; i < 40; i++)); do
            e2_has_runtime "$GVISOR_RUNTIME" && break
            sleep 0.25
        done
        e2_has_runtime "$GVISOR_RUNTIME" || {
            tail -n 20 "$E2_LOG" >&2
            die "engine2 did not register $GVISOR_RUNTIME after reloading $conf"
        }
        GVISOR_NOTE="registered"
    else
        GVISOR_NOTE="already registered"
    fi
    # Under gVisor, uname -r is gVisor's kernel, not the host's: the container really runs there.
    host_kernel=$(uname -r)
    out=$(timeout 120 docker --host "unix://$E2_SOCK" run --rm --runtime "$GVISOR_RUNTIME" \
        --network none "$BB_IMAGE" uname -r 2>&1) || true
    [[ -n $out && $out != *$'\n'* && $out != "$host_kernel" && $out != *rror* ]] ||
        die "a container under $GVISOR_RUNTIME on engine2 did not run in gVisor (uname -r: $out; host: $host_kernel)"
    log "gVisor: engine2 runs $GVISOR_RUNTIME containers ($GVISOR_NOTE; $(runsc --version | head -n1); kernel $out)"
}

# write_gvisor_env: the gVisor lane's facts, appended to engines.env.
write_gvisor_env() {
    cat >>"$ENGINES_ENV" <<EOF
# gVisor (issue 22): the daemon that has runsc registered, and the runtime's name.
DOCKEXEC_TEST_GVISOR_HOST=unix://$E2_SOCK
DOCKEXEC_TEST_GVISOR_RUNTIME=$GVISOR_RUNTIME
EOF
}

# reap_gvisor_leftovers ROOT: runsc sandboxes under ROOT outlive a dockerd that died without
# shutting down; their processes name the root in --root=ROOT.
reap_gvisor_leftovers() {
    local root=$1 id p cmd pids=()
    if [[ -d $root ]] && have runsc; then
        while read -r id; do
            [[ -n $id ]] || continue
            if runsc --root "$root" delete -force "$id" >/dev/null 2>&1; then
                log "engine2: removed leftover gVisor sandbox ${id:0:12} (runsc delete -force)"
            fi
        done < <(runsc --root "$root" list -quiet 2>/dev/null || true)
    fi
    for p in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
        [[ $cmd == runsc*" --root=$root "* ]] && pids+=("${p#/proc/}")
    done
    ((${#pids[@]})) || return 0
    log "engine2: killing leftover runsc pid(s) ${pids[*]}"
    kill -KILL "${pids[@]}" 2>/dev/null || true
}

# ------------------------------------------------------ end of gVisor (issue 22) ---

# mounts_under DIR...: the mount points at or below any DIR, deepest first.
mounts_under() {
    local d
    for d in "$@"; do
        d=$(realpath -m "$d")
        # field 5 of mountinfo is the mount point, with spaces etc. as octal escapes
        awk -v d="$d" '{ m = $5; gsub(/\\040/, " ", m); if (m == d || index(m, d "/") == 1) print m }' /proc/self/mountinfo
    done | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-
}

# reap_engine2_leftovers: what outlives a dockerd that died without shutting down (a crash, the
# SIGKILL of stop_pidfile): its containers (runc's state dir for engine2's namespace), the
# shims and its containerd. Every process whose command line names our exec-root is ours.
reap_engine2_leftovers() {
    local root="$E2_EXEC/runtime-runc/dockexec-engine2" id p cmd pids=() i
    if [[ -d $root ]] && have runc; then
        while read -r id; do
            [[ -n $id ]] || continue
            if runc --root "$root" delete -f "$id" >/dev/null 2>&1; then
                log "engine2: removed leftover container ${id:0:12} (runc delete -f)"
            fi
        done < <(runc --root "$root" list -q 2>/dev/null || true)
    fi
    reap_gvisor_leftovers "$root"
    for p in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
        [[ $cmd == *" $E2_EXEC/containerd/"* ]] && pids+=("${p#/proc/}")
    done
    ((${#pids[@]})) || return 0
    log "engine2: stopping leftover containerd/shim pid(s) ${pids[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
        any_alive "${pids[@]}" || return 0
        sleep 0.25
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
}

# any_alive PID...: at least one of the PIDs still exists.
any_alive() {
    local p
    for p; do kill -0 "$p" 2>/dev/null && return 0; done
    return 1
}

stop_engine2() {
    stop_pidfile "$E2_PID" dockerd engine2
    clean_engine2_remains
}

# clean_engine2_remains: once no engine2 runs, its leftover processes and every mount under its
# data-root and exec-root.
clean_engine2_remains() {
    reap_engine2_leftovers
    local m n=0
    while IFS= read -r m; do
        [[ -n $m ]] || continue
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "engine2: could not unmount $m"
        n=$((n + 1))
    done < <(mounts_under "$E2_DATA" "$E2_EXEC")
    ((n == 0)) || log "engine2: unmounted $n mount(s) under $E2_DATA and $E2_EXEC"
}

# down_engines: stop the engine2 and sshd this script started (by pid file); forget the env.
down_engines() {
    stop_pidfile "$SSHD_PID" sshd sshd
    stop_engine2
    rm -f "$ENGINES_ENV" "$E2_SOCK"
}

# ------------------------------------------------------------- Podman (issue 17) ---
#
# A rootful `podman system service --time=0` (without --time=0 it exits after 5 s idle) on
# $PODMAN_SOCK, with storage, runroot and tmpdir of its own, so that nothing here touches
# another Podman's containers or images. The library and the tests' docker CLI reach it
# through its Docker-compatible API, as a user's DOCKER_HOST would.

# podman_cli ARGS...: the podman CLI on our service's storage (for --down's cleanup).
podman_cli() {
    CONTAINERS_REGISTRIES_CONF="$PODMAN_DIR/registries.conf" podman --root "$PODMAN_DIR/storage" \
        --runroot "$PODMAN_RUN" --tmpdir "$PODMAN_TMP" --cgroup-manager cgroupfs --events-backend file "$@"
}

pmdocker() { docker --host "unix://$PODMAN_SOCK" "$@"; }

# podman_ping: the service answers /_ping on its socket.
podman_ping() { [[ -S $PODMAN_SOCK ]] && [[ "$(curl -sf -m 5 --unix-socket "$PODMAN_SOCK" http://d/_ping 2>/dev/null)" == OK ]]; }

# podman_owned: the pid file names our live service.
podman_owned() { [[ -r $PODMAN_PID ]] && alive "$(cat "$PODMAN_PID")" podman; }

ensure_podman_service() {
    if podman_owned && podman_ping; then
        PODMAN_NOTE="reused pid $(cat "$PODMAN_PID")"
        log "podman answers on $PODMAN_SOCK, reusing it"
        return 0
    fi
    if podman_owned; then
        log "podman (pid $(cat "$PODMAN_PID")) does not answer, restarting it"
        stop_pidfile "$PODMAN_PID" podman podman
    elif podman_ping; then
        die "something this script did not start answers on $PODMAN_SOCK (no live pid in $PODMAN_PID); stop it first"
    fi
    rm -f "$PODMAN_PID" "$PODMAN_SOCK"
    mkdir -p "$PODMAN_DIR/storage" "$PODMAN_RUN" "$PODMAN_TMP"
    cat >"$PODMAN_DIR/registries.conf" <<EOF
# Written by scripts/test-env.sh: short names resolve locally only (never a pull from the
# internet); the loopback test registry speaks plain HTTP.
unqualified-search-registries = []
[[registry]]
location = "$REG_ADDR"
insecure = true
EOF
    : >"$PODMAN_LOG"
    log "starting podman system service --time=0 on unix://$PODMAN_SOCK (rootful; log: $PODMAN_LOG)"
    spawn "$PODMAN_LOG" env CONTAINERS_REGISTRIES_CONF="$PODMAN_DIR/registries.conf" \
        podman --root "$PODMAN_DIR/storage" --runroot "$PODMAN_RUN" --tmpdir "$PODMAN_TMP" \
        --cgroup-manager cgroupfs --events-backend file \
        system service --time=0 "unix://$PODMAN_SOCK"
    local pid=$SPAWNED_PID i
    echo "$pid" >"$PODMAN_PID"
    for ((i = 0; i < DAEMON_WAIT * 4; i++)); do
        podman_ping && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if ! podman_ping; then
        log "podman did not answer /_ping on $PODMAN_SOCK within ${DAEMON_WAIT}s; last lines of $PODMAN_LOG:"
        tail -n 40 "$PODMAN_LOG" >&2 || true
        kill -0 "$pid" 2>/dev/null || rm -f "$PODMAN_PID"
        exit 1
    fi
    PODMAN_NOTE="started pid $pid"
    log "podman is up ($PODMAN_NOTE)"
}

# ensure_podman_images: the test images with the Docker daemon's image IDs (loaded offline),
# and $SLIM_TAG on the python one (Podman stores them as localhost/<name> and
# docker.io/library/python:3-slim; the compat API resolves the tests' short names to those).
ensure_podman_images() {
    local img want=() t0=$SECONDS
    for img in "$PY_IMAGE" "$BB_IMAGE"; do
        [[ "$(pmdocker image inspect -f '{{.Id}}' "$img" 2>/dev/null)" == "$(image_id "$img")" ]] || want+=("$img")
    done
    if ((${#want[@]})); then
        log "loading ${want[*]} into podman (docker save | docker --host unix://$PODMAN_SOCK load)"
        docker save "${want[@]}" | pmdocker load >"$PODMAN_DIR/load.log" 2>&1 ||
            { tail -n 20 "$PODMAN_DIR/load.log" >&2; die "loading the test images into podman failed"; }
        log "loaded ${want[*]} into podman in $((SECONDS - t0)) s"
    else
        log "podman has $PY_IMAGE and $BB_IMAGE"
    fi
    if [[ "$(pmdocker image inspect -f '{{.Id}}' "$SLIM_TAG" 2>/dev/null)" != "$(image_id "$PY_IMAGE")" ]]; then
        pmdocker tag "$PY_IMAGE" "$SLIM_TAG"
        log "podman: tagged $PY_IMAGE as $SLIM_TAG"
    fi
    for img in "$PY_IMAGE" "$BB_IMAGE" "$SLIM_TAG"; do
        [[ "$(pmdocker image inspect -f '{{.Id}}' "$img" 2>/dev/null)" == "$(image_id "$img")" ]] ||
            die "podman does not resolve $img to the Docker daemon's image"
    done
}

# A rootless Podman service as well (issue 17: the fail-closed refusal on a real engine): user
# $PODMAN_RL_USER with subuid/subgid ranges, its runtime dir under $E2_RUN, on cgroup v1 here,
# where it cannot enforce pids, memory or CPU limits (it says so only in a warning). No images:
# dockexec refuses before it needs one. Written to engines.env as DOCKEXEC_TEST_PODMAN_ROOTLESS_HOST.
ensure_podman_rootless() {
    local user=$PODMAN_RL_USER uid pid i
    if ! id "$user" >/dev/null 2>&1; then
        useradd --create-home --shell /usr/sbin/nologin "$user" || die "useradd $user failed"
        log "podman rootless: made the user $user"
    fi
    uid=$(id -u "$user")
    grep -q "^$user:" /etc/subuid || echo "$user:400000:65536" >>/etc/subuid
    grep -q "^$user:" /etc/subgid || echo "$user:400000:65536" >>/etc/subgid
    if [[ -r $PODMAN_RL_PID ]] && alive "$(cat "$PODMAN_RL_PID")" podman &&
        [[ "$(curl -sf -m 5 --unix-socket "$PODMAN_RL_SOCK" http://d/_ping 2>/dev/null)" == OK ]]; then
        log "rootless podman answers on $PODMAN_RL_SOCK, reusing it"
        return 0
    fi
    down_podman_rootless
    install -d -m 0700 -o "$user" -g "$user" "$PODMAN_RL_RUN" "$PODMAN_RL_RUN/podman"
    log "starting a rootless podman system service --time=0 (user $user) on unix://$PODMAN_RL_SOCK"
    # setpriv execs: the pid is podman's own, for the pid file.
    spawn "$STATE/podman-rootless.log" setpriv --reuid "$uid" --regid "$(id -g "$user")" --init-groups \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$(getent passwd "$user" | cut -d: -f6)" \
        XDG_RUNTIME_DIR="$PODMAN_RL_RUN" podman --events-backend file \
        system service --time=0 "unix://$PODMAN_RL_SOCK"
    pid=$SPAWNED_PID
    echo "$pid" >"$PODMAN_RL_PID"
    for ((i = 0; i < DAEMON_WAIT * 4; i++)); do
        [[ "$(curl -sf -m 5 --unix-socket "$PODMAN_RL_SOCK" http://d/_ping 2>/dev/null)" == OK ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    [[ "$(curl -sf -m 5 --unix-socket "$PODMAN_RL_SOCK" http://d/_ping 2>/dev/null)" == OK ]] ||
        { tail -n 20 "$STATE/podman-rootless.log" >&2; die "the rootless podman service did not answer on $PODMAN_RL_SOCK"; }
    log "rootless podman is up (pid $pid)"
}

# down_podman_rootless: the rootless service (pid file), then every process left of its user,
# which this script made for it alone: rootless podman re-executes itself inside its user
# namespace (the pid file names the outer one) and keeps a pause process (catatonit) there.
down_podman_rootless() {
    stop_pidfile "$PODMAN_RL_PID" podman "rootless podman"
    local pids=()
    if id "$PODMAN_RL_USER" >/dev/null 2>&1; then
        mapfile -t pids < <(ps -o pid= -u "$PODMAN_RL_USER" 2>/dev/null | tr -d ' ')
    fi
    if ((${#pids[@]})); then
        log "rootless podman: stopping the rest of $PODMAN_RL_USER's processes: ${pids[*]}"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        sleep 1
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    rm -rf "$PODMAN_RL_RUN"
}

# write_podman_env: podman's lines appended to engines.env (written whole by write_engines_env).
write_podman_env() {
    local tmp="$ENGINES_ENV.podman.tmp"
    cp "$ENGINES_ENV" "$tmp"
    cat >>"$tmp" <<EOF
# Podman (issue 17): a rootful podman system service, Docker-compatible API.
DOCKEXEC_TEST_PODMAN_SOCK=$PODMAN_SOCK
DOCKEXEC_TEST_PODMAN_HOST=unix://$PODMAN_SOCK
DOCKEXEC_TEST_PODMAN_ROOTLESS_HOST=unix://$PODMAN_RL_SOCK
EOF
    mv "$tmp" "$ENGINES_ENV"
}

ensure_podman() {
    if [[ ${DOCKEXEC_TEST_PODMAN:-1} == 0 ]]; then
        log "SKIP podman (DOCKEXEC_TEST_PODMAN=0): engines.env names no podman, the podman lane skips"
        return 0
    fi
    local pkgs=()
    have podman || pkgs+=(podman)
    # Podman's init for HostConfig.Init (what docker-init is to Docker).
    [[ -x /usr/libexec/podman/catatonit || -x /usr/bin/catatonit ]] || pkgs+=(catatonit)
    # The rootless service's user namespace maps the subuid ranges with these.
    have newuidmap || pkgs+=(uidmap)
    apt_install "${pkgs[@]+"${pkgs[@]}"}"
    mkdir -p "$PODMAN_DIR"
    ensure_podman_service
    ensure_podman_images
    ensure_podman_rootless
    write_podman_env
}

# down_podman: our service's containers, then the service (by pid file).
down_podman() {
    if podman_owned; then
        podman_cli rm -af -t 0 >/dev/null 2>&1 || true
    fi
    stop_pidfile "$PODMAN_PID" podman podman
    rm -f "$PODMAN_SOCK"
    down_podman_rootless
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
    down_engines
    down_podman
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
    # engine2's certificates, the sshd and the ssh client of the remote-engine tests
    have openssl || pkgs+=(openssl)
    have sshd || pkgs+=(openssh-server)
    { have ssh && have ssh-keygen; } || pkgs+=(openssh-client)
    # scripts/test.sh's lint gate checks the scripts with it.
    have shellcheck || pkgs+=(shellcheck)
    # gVisor (issue 22): the runtime of the gVisor lane, registered on engine2.
    have runsc || pkgs+=(runsc)
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

# Dies unless python3 in IMAGE runs CODE (imports) with no network; logs WHAT it checked.
python_imports() { # image, code, what
    local out
    out=$(docker run --rm --network none "$1" python3 -c "$2; print(1)" 2>&1) || true
    [[ $out == 1 ]] || die "python3 cannot import $3 in $1: $out"
    log "$1: python3 imports $3 (--network none)"
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
    python_imports "$PY_IMAGE" 'import ctypes, multiprocessing' "ctypes and multiprocessing"
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

# The python image plus Debian's python3-matplotlib, for the rich-result tests only (issue 19):
# python3-matplotlib pulls ~140 packages into the python image (scipy, sympy, pythran and a C++
# toolchain through fonttools), so it gets its own image, built cheaply on top of the python one:
# the runtime packages matplotlib's pyplot and Agg backend import are resolved against the
# image's own dpkg status, fetched on the host with apt-get download, and installed with dpkg in
# a --network none container that is committed (python3-matplotlib's own dependencies on
# fonttools and pil.imagetk are forced: neither is imported to draw a PNG).
MPL_PKGS=(python3-numpy python3-pil python3-dateutil python3-pyparsing python3-cycler
    python3-kiwisolver python3-packaging python3-contourpy python-matplotlib-data libqhull-r8.0
    libfreetype6)
ensure_mpl_image() {
    if image_current "$MPL_IMAGE"; then
        log "$MPL_IMAGE present ($STAMP_LABEL=${STAMP[$MPL_IMAGE]})"
    else
        replaced "$MPL_IMAGE"
        local dir cid pkgs t0=$SECONDS
        dir=$(mktemp -d "$STATE/mpl.XXXXXX")
        WORKDIRS+=("$dir")
        cid=$(docker create "$PY_IMAGE" true)
        docker cp "$cid:/var/lib/dpkg/status" "$dir/status" >/dev/null
        docker rm "$cid" >/dev/null
        mapfile -t pkgs < <(apt-get -o "Dir::State::status=$dir/status" install -s \
            --no-install-recommends "${MPL_PKGS[@]}" 2>/dev/null | awk '$1 == "Inst" { print $2 }')
        ((${#pkgs[@]})) || die "apt-get could not resolve ${MPL_PKGS[*]} against $PY_IMAGE"
        mkdir -p "$dir/debs"
        log "building $MPL_IMAGE: $PY_IMAGE + python3-matplotlib and ${#pkgs[@]} packages"
        (cd "$dir/debs" && apt-get download python3-matplotlib "${pkgs[@]}" >"$dir/download.log" 2>&1) ||
            { tail -n 20 "$dir/download.log" >&2; die "apt-get download failed"; }
        cid=$(docker create --network none --user 0 -v "$dir/debs:/debs:ro" "$PY_IMAGE" \
            sh -c 'dpkg -i --force-depends /debs/*.deb >/tmp/dpkg.log 2>&1 || { tail -n 20 /tmp/dpkg.log; exit 1; }
                   rm -rf /usr/share/doc/* /usr/share/man/* /var/cache/apt/archives/*.deb /tmp/dpkg.log')
        if ! docker start -a "$cid" >&2; then
            docker rm "$cid" >/dev/null
            die "installing python3-matplotlib into $MPL_IMAGE failed"
        fi
        docker commit -c 'CMD ["/bin/sh"]' -c "LABEL $STAMP_LABEL=${STAMP[$MPL_IMAGE]}" \
            "$cid" "$MPL_IMAGE" >/dev/null
        docker rm "$cid" >/dev/null
        remove_tree "$dir"
        log "built $MPL_IMAGE in $((SECONDS - t0)) s"
    fi
    python_imports "$MPL_IMAGE" 'import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot' \
        "matplotlib.pyplot"
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
        "registry $REG_ADDR ($REGISTRY_NOTE) with ${REG_REPO[$PY_IMAGE]}:latest ${REG_REPO[$BB_IMAGE]}:latest;" \
        "engine2 unix://$E2_SOCK + TLS tcp://127.0.0.1:$E2_TLS_PORT ($ENGINE2_NOTE), sshd 127.0.0.1:$SSHD_PORT ($SSHD_NOTE);" \
        "podman unix://$PODMAN_SOCK ($PODMAN_NOTE);" \
        "gVisor: $GVISOR_RUNTIME on engine2 ($GVISOR_NOTE);" \
        "engines env $ENGINES_ENV"
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
        # (not in the usage: stop only engine2 and the sshd, leaving the shared daemon alone)
        --down-engines) action=down-engines ;;
        --down-podman) action=down-podman ;;
        # (not in the usage: build only the matplotlib image, touching no service)
        --mpl-image) action=mpl-image ;;
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
    down-engines) lock 600; down_engines; log "engines down"; return ;;
    down-podman) lock 600; down_podman; log "podman down"; return ;;
    untag) lock 600; untag_slim; return ;;
    mpl-image) trap cleanup EXIT; lock 900; ensure_mpl_image; forget_old_images; return ;;
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
    ensure_mpl_image
    forget_old_images
    ensure_registry
    push_image "$PY_IMAGE"
    push_image "$BB_IMAGE"
    ensure_engines
    ensure_podman
    summary
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
