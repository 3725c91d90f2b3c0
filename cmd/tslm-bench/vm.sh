#!/bin/sh
# vm.sh runs tslm-bench inside a throwaway virtual machine, for a run that
# needs more sockets in one process than this machine's hard file limit
# allows (50 000 idle connections need 50 000 descriptors in the gateway's
# process, and as many in the tool's). The VM is one Linux kernel and an
# initramfs holding busybox and a static tslm-bench; its init raises the
# limits and the kernel settings of `tslm-bench -h`, runs the tool with
# the arguments given here, prints its output on the console and powers
# off. Without KVM, qemu emulates the CPU: the figures per connection
# (memory) hold, times do not.
#
#   cmd/tslm-bench/vm.sh -target self-memory -scenario idle \
#       -connections 50000 -channels 500 -max-conns 50000 -local-addrs 4 -compare bare
#
# Needs qemu-system-x86_64, a static busybox (Debian: qemu-system-x86,
# busybox-static), cpio, and a kernel: $KERNEL, else /boot/vmlinuz-*, else
# Debian's linux-image-amd64, fetched with apt-get download. VM_MEMORY
# (default 16G) and VM_CPUS (default: this machine's) size the VM. The
# TSLM_* variables of the environment reach the gateways the tool starts.
set -eu

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

kernel=${KERNEL:-}
if [ -z "$kernel" ]; then
	kernel=$(ls /boot/vmlinuz-* 2>/dev/null | tail -1 || true)
fi
if [ -z "$kernel" ]; then
	pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[^ ]*\)/\1/p' | head -1)
	(cd "$work" && apt-get download "$pkg" >/dev/null)
	dpkg-deb -x "$work"/"$pkg"_*.deb "$work/kernel"
	kernel=$(ls "$work"/kernel/boot/vmlinuz-* | tail -1)
fi

mkdir -p "$work/root/bin" "$work/root/proc" "$work/root/sys" "$work/root/dev" "$work/root/tmp"
cp "$(command -v busybox)" "$work/root/bin/busybox"
(cd "$root" && CGO_ENABLED=0 go build -o "$work/root/tb" ./cmd/tslm-bench)
# The arguments, and the TSLM_* variables of this environment (for the
# gateways the tool starts), go to init through files in the initramfs,
# quoted for sh.
quote() { printf "'%s'" "$(printf %s "$1" | sed "s/'/'\\\\''/g")"; }
for a in "$@"; do quote "$a"; printf ' '; done > "$work/root/args"
env | grep '^TSLM_' | while IFS= read -r kv; do printf 'export %s=%s\n' "${kv%%=*}" "$(quote "${kv#*=}")"; done > "$work/root/env"
cat > "$work/root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ip link set lo up
sysctl -w fs.nr_open=1048576 fs.file-max=2097152 >/dev/null
sysctl -w net.ipv4.ip_local_port_range="1024 65535" >/dev/null
sysctl -w net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 >/dev/null
sysctl -w net.ipv4.tcp_mem="786432 1048576 1572864" >/dev/null
ulimit -n 200000
echo "vm: $(nproc) CPUs, $(free -m | awk '/Mem:/{print $2}') MiB, ulimit -n $(ulimit -n), kernel $(uname -r)"
. /env
echo "vm: $(grep -c export /env) TSLM_* variables: $(sed -n "s/^export \([^=]*\)=.*/\1/p" /env | tr "\n" " ")"
eval "set -- $(cat /args)"
/tb "$@"
echo "vm: tslm-bench exited $?"
poweroff -f
EOF
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initrd.gz")

accel=tcg,thread=multi
[ -w /dev/kvm ] && accel=kvm
qemu-system-x86_64 -accel "$accel" -smp "${VM_CPUS:-$(nproc)}" -m "${VM_MEMORY:-16G}" \
	-kernel "$kernel" -initrd "$work/initrd.gz" -nographic -no-reboot \
	-append "console=ttyS0 quiet panic=-1"
