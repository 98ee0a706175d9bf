"""The interop lab: real verbs (rdma_rxe) and the Linux kernel's iSCSI/iSER as peers.

``python -m lab`` (or ``lab/run.sh``) installs what it needs from Debian, builds a QEMU guest
that boots Debian's own kernel under TCG (no KVM, no NIC, no network), runs the chosen
scenarios inside it and writes a report of what ran, passed and failed, with logs.

Layout:
    host.py        Debian packages, the kernel package, pyverbs in the venv (host side)
    image.py       the initramfs: busybox, the virtio/9p modules, /init
    vm.py          the QEMU command line and its run
    plan.py        scenario catalogue and the plan handed to the guest
    report.py      results (JUnit XML per scenario) -> report.json / report.md
    guest/         what runs inside the guest: /init, the chroot session, the scenario runner
    scenarios/     one pytest module per scenario; they run only inside the guest
"""
