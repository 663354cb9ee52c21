#!/bin/sh
# Hand idle cgroup v1 controllers over to the cgroup2 hierarchy of a hybrid host, and back,
# so that tests/test_cgroups_v2.py can test them for real.
#
#   tests/cgroup2-stage.sh enter [controller...]   # default: $DEFAULT below
#   python3 -m pytest -q tests/test_cgroups_v2.py
#   tests/cgroup2-stage.sh leave                   # remount what `enter` moved
#   tests/cgroup2-stage.sh run COMMAND...          # enter, run COMMAND, leave (even on failure)
#   tests/cgroup2-stage.sh status
#
# A v1 controller can move only when its hierarchy has no child cgroups (then unmounting it
# destroys the hierarchy and frees the controller). Empty child cgroups (no process anywhere
# below them: leftovers of earlier runs) are removed first; a hierarchy with a populated child
# is skipped with a warning. The memory hierarchy of this kind of machine holds the sandbox
# itself, so memory never moves. freezer and devices are not cgroup2 controllers: once their v1
# hierarchies are gone, containers use cgroup.freeze and a BPF device filter. Never use this while other things (docker, other test
# runs) need the v1 hierarchies.
set -eu

STATE=/run/pyruntime-cgroup2-stage
DEFAULT="pids hugetlb cpu cpuset blkio freezer devices"
UNIFIED=$(awk '{ split($0, a, " - "); split(a[2], b, " "); if (b[1] == "cgroup2") { print $5; exit } }' /proc/self/mountinfo)
[ -n "$UNIFIED" ] || { echo "no cgroup2 mount: not a hybrid host" >&2; exit 1; }

v2name() { if [ "$1" = blkio ]; then echo io; else echo "$1"; fi; }

# mount point and controller list of the v1 hierarchy holding controller $1
v1mount() {
    awk -v c="$1" '{ split($0, a, " - "); split(a[2], b, " ");
        if (b[1] != "cgroup") next;
        n = split(b[3], o, ","); for (i = 1; i <= n; i++) if (o[i] == c) { print $5; exit } }' \
        /proc/self/mountinfo
}

# the hierarchy id of controller $1 in /proc/cgroups: 0 once it belongs to cgroup2
hierarchy() { awk -v c="$1" '$1 == c { print $2 }' /proc/cgroups; }

has() { grep -qw "$2" "$1/cgroup.controllers" 2>/dev/null; }

# Remove the child cgroups of hierarchy $1 if none holds a process; fail (and keep them) if any does.
prune() {
    busy=$(find "$1" -mindepth 2 -name cgroup.procs 2>/dev/null | while read -r f; do
        [ -n "$(head -c1 "$f")" ] && echo "${f%/cgroup.procs}"; done | head -1)
    [ -z "$busy" ] || { echo "$busy"; return 1; }
    find "$1" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
    [ -z "$(find "$1" -mindepth 1 -maxdepth 1 -type d | head -1)" ]
}

enter() {
    [ $# -gt 0 ] || set -- $DEFAULT
    for c in "$@"; do
        mnt=$(v1mount "$c")
        if [ -z "$mnt" ]; then
            echo "$c: no v1 hierarchy (already in cgroup2?)"; continue
        fi
        if [ -n "$(find "$mnt" -mindepth 1 -maxdepth 1 -type d | head -1)" ]; then
            if busy=$(prune "$mnt"); then
                echo "$c: removed the empty child cgroups of $mnt"
            else
                echo "$c: skipped, $mnt has child cgroups in use${busy:+ ($busy)}" >&2
                continue
            fi
        fi
        opts=$(awk -v m="$mnt" '$5 == m { split($0, a, " - "); split(a[2], b, " "); print b[3]; exit }' /proc/self/mountinfo)
        moved=
        for _ in 1 2 3 4 5 6; do
            # EBUSY: a process that just ended (the test run before us) may still hold a file
            # of the hierarchy open for a moment.
            umount "$mnt" 2>/dev/null || { sleep 1; continue; }
            i=0
            until [ "$(hierarchy "$c")" = 0 ] || [ $i -ge 40 ]; do i=$((i + 1)); sleep 0.05; done
            [ "$(hierarchy "$c")" = 0 ] && { moved=1; break; }
            # The hierarchy outlived its mount: children removed a moment ago are still being
            # released. Mount it back (that finds the same hierarchy), give it time, retry.
            mount -t cgroup -o "$c" cgroup "$mnt"
            sleep 1
        done
        [ -n "$moved" ] || { echo "$c: its v1 hierarchy does not go away; left as it was" >&2; continue; }
        echo "$c $mnt $opts" >> "$STATE"
        case $c in
            freezer|devices) echo "$c: v1 hierarchy gone (cgroup2 does this without a controller)"; continue ;;
        esac
        v=$(v2name "$c")
        if echo "+$v" > "$UNIFIED/cgroup.subtree_control" 2>/dev/null; then
            echo "$c: moved to cgroup2 ($UNIFIED) as $v"
        else
            echo "$c: in cgroup2 but could not enable +$v in $UNIFIED/cgroup.subtree_control" >&2
        fi
    done
}

leave() {
    [ -f "$STATE" ] || { echo "nothing staged"; return 0; }
    rc=0
    tac "$STATE" | while read -r c mnt opts; do
        v=$(v2name "$c")
        [ "$c" = freezer ] || [ "$c" = devices ] || echo "-$v" > "$UNIFIED/cgroup.subtree_control" 2>/dev/null ||
            echo "$c: cannot disable $v in cgroup2 (a child cgroup still uses it?)" >&2
        mkdir -p "$mnt"
        i=0
        # Cgroups just removed in cgroup2 can keep the controller busy for a while (up to ~30 s
        # seen here): wait for it rather than leave the host without the v1 hierarchy.
        until mount -t cgroup -o "$c" cgroup "$mnt" 2>/dev/null; do
            i=$((i + 1))
            if [ $i -ge 1200 ]; then echo "$c: cannot remount at $mnt" >&2; rc=1; break; fi
            sleep 0.05
        done
        [ $i -lt 1200 ] && echo "$c: back at $mnt"
    done
    rm -f "$STATE"
    return $rc
}

case "${1:-}" in
    enter) shift; enter "$@" ;;
    leave) leave ;;
    run)
        shift
        [ $# -gt 0 ] || { echo "usage: $0 run COMMAND..." >&2; exit 2; }
        trap leave EXIT INT TERM
        enter
        "$@" ;;
    status)
        echo "cgroup2 at $UNIFIED: $(cat "$UNIFIED/cgroup.controllers")"
        [ -f "$STATE" ] && { echo "staged:"; cat "$STATE"; } || echo "nothing staged" ;;
    *) echo "usage: $0 enter [controller...] | leave | run COMMAND... | status" >&2; exit 2 ;;
esac
