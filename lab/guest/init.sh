#!/bin/busybox sh
# /init of the lab's initramfs (busybox only). Mounts the host's / (read-only 9p) under a
# tmpfs overlay so the guest can write anywhere without touching the host, mounts the run
# directory (writable 9p) at its host path, loads the RDMA modules from the unpacked Debian
# kernel, then runs the chroot session (lab/guest/session.sh) and powers off.
# Parameters come on the kernel command line: lab.run= lab.kroot= lab.kver= lab.repo=
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for kv in $(cat /proc/cmdline); do
    case "$kv" in
        lab.run=*) RUN=${kv#lab.run=} ;;
        lab.kroot=*) KROOT=${kv#lab.kroot=} ;;
        lab.kver=*) KVER=${kv#lab.kver=} ;;
        lab.repo=*) REPO=${kv#lab.repo=} ;;
    esac
done
echo "lab-init: run=$RUN kroot=$KROOT kver=$KVER repo=$REPO"
for m in virtio_pci 9pnet_virtio 9p overlay; do modprobe $m || echo "lab-init: modprobe $m failed"; done
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /lower \
    || mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /lower \
    || echo "lab-init: 9p root mount failed"
mount -t tmpfs -o size=1536m rw /rw; mkdir -p /rw/upper /rw/work
if mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot; then
    echo "lab-init: root is the host's / under a tmpfs overlay"
else
    echo "lab-init: overlay failed; read-only root with tmpfs on /run /tmp"
    mount --bind /lower /newroot
fi
mkdir -p /newroot$RUN
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /newroot$RUN || echo "lab-init: 9p run mount failed"
# the unpacked kernel's module tree, for this /init and for modprobe in the chroot
rm -rf /lib/modules && ln -s /lower$KROOT/lib/modules /lib/modules
mkdir -p /newroot/lib/modules 2>/dev/null && ln -sfn $KROOT/lib/modules/$KVER /newroot/lib/modules/$KVER
# modules the kernel asks for itself (crc32c for iscsi_tcp digests, ...) come from the same tree
echo /bin/modprobe > /proc/sys/kernel/modprobe
# rxe needs crc32_generic ("failed to init crc32 algorithm err:-2" without it)
for m in crc32_generic crc32c_generic rdma_rxe ib_uverbs rdma_ucm dummy configfs; do
    modprobe $m || echo "lab-init: modprobe $m failed"
done
mount -t proc proc /newroot/proc; mount -t sysfs sys /newroot/sys; mount -t devtmpfs dev /newroot/dev
mount -t configfs configfs /newroot/sys/kernel/config 2>/dev/null
mkdir -p /newroot/dev/pts /newroot/dev/shm; mount -t devpts devpts /newroot/dev/pts; mount -t tmpfs shm /newroot/dev/shm
# fresh /run and /tmp, unless the repository or the run directory lives there (a clone in
# /tmp, as CI may make): a tmpfs would hide it; the overlay keeps them writable anyway
case "$REPO/ $RUN/" in
    /run/*|*" /run/"*) echo "lab-init: keeping the host's /run (the repository is under it)" ;;
    *) mount -t tmpfs run /newroot/run ;;
esac
mkdir -p /newroot/run/lock
case "$REPO/ $RUN/" in
    /tmp/*|*" /tmp/"*) echo "lab-init: keeping the host's /tmp (the repository is under it)" ;;
    *) mount -t tmpfs tmp /newroot/tmp ;;
esac
ln -sf /proc/self/fd /newroot/dev/fd
chroot /newroot /bin/bash $REPO/lab/guest/session.sh "$RUN" "$REPO"
echo "lab-init: session exit=$?"
sync
umount /newroot$RUN 2>/dev/null
echo o > /proc/sysrq-trigger
sleep 10
