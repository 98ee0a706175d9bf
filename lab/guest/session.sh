#!/bin/bash
# The guest session, run chrooted in the host's root (overlaid): network and rxe set-up,
# then the scenario runner. Everything it prints goes to RUN/guest.log as well.
# Usage (from /init): session.sh RUN_DIR REPO
RUN=$1; REPO=$2
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
exec > >(tee -a "$RUN/guest.log") 2>&1
echo "session: $(date -u +%FT%TZ) kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/{print $2" kB"}' /proc/meminfo)"
IP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rdma_ip"])' "$RUN/plan.json")
ip link set lo up
ip link add dummy0 type dummy 2>/dev/null   # the dummy module may have made it already
ip addr add "$IP/24" dev dummy0
ip link set dummy0 up
rdma link add rxe0 type rxe netdev dummy0 || echo "session: rdma link add failed"
rdma link show
ls -la /dev/infiniband 2>&1
ibv_devinfo -d rxe0 2>&1 | grep -E "state|link_layer|transport" || true
hostname lab-guest
# targetcli asks the system bus for tcmu-runner backstores and dies without one
mkdir -p /run/dbus /etc/target && dbus-daemon --system --fork || echo "session: no system dbus"
cd "$REPO"
"$REPO/.venv/bin/python" -m lab.guest "$RUN"
rc=$?
echo "session: runner exit=$rc"
sync
exit $rc
