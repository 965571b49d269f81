/**
 * The nested VM's `/init`: a busybox shell script that loads the modules, mounts the host's root
 * file system read-only over 9p with a tmpfs overlay on top, mounts the run's writable share at its
 * host path, and runs the job in a chroot of that overlay with COM2 as its terminal. Pure text.
 *
 * @module
 */

/** The 9p mount tag of the host's root file system (read-only). */
export const HOST_ROOT_TAG = "hostroot";
/** The 9p mount tag of the run's writable share (job script in, status out). */
export const SHARE_TAG = "kvmts";
/** The share's file listing the 9p mounts to make inside, one `TAG PATH` line each. */
export const MOUNTS_FILE = "mounts";
/** The job script's name inside the share. */
export const JOB_FILE = "job.sh";
/** The file the job writes its exit status to, inside the share. */
export const STATUS_FILE = "status";
/**
 * The file the VM's init touches every {@link ALIVE_INTERVAL_SECONDS} s in the share, from the moment
 * the share is mounted until power-off: a sign of life that a frozen kernel stops giving, whatever the
 * job does.
 */
export const ALIVE_FILE = "alive";
/** Seconds between two touches of {@link ALIVE_FILE}. */
export const ALIVE_INTERVAL_SECONDS = 5;
/** Printed on the console (COM1) when the job is about to start: the VM came up. */
export const READY_MARKER = "kvm-ts-nested: ready";
/** Printed on the console before the VM powers off after a failure of the init itself. */
export const INIT_FAILED_MARKER = "kvm-ts-nested: init failed:";

/** Folder of the initramfs that holds the modules, in load order. */
export const MODULES_DIR = "modules";

/** A word quoted for a POSIX shell. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'"'"'`)}'`;
}

/**
 * The `/init` script. `modules` are the initramfs paths (under {@link MODULES_DIR}) in load order.
 * The run's share is mounted at `/share` first; its {@link MOUNTS_FILE} lists the writable 9p shares
 * to mount inside the chroot at their host paths, the share itself first, so that every path
 * means the same on both sides. Nothing run-specific is in the script, so one initramfs serves
 * every run.
 */
export function initScript(modules: readonly string[]): string {
  const bb = "/bin/busybox";
  const ninep = "trans=virtio,version=9p2000.L,msize=512000";
  return [
    `#!${bb} sh`,
    "# kvm-ts nested VM: the host's root read-only over 9p, a tmpfs overlay, the job in a chroot.",
    `say() { ${bb} echo "$*" > /dev/ttyS0; }`,
    `fail() { say "${INIT_FAILED_MARKER} $*"; ${bb} poweroff -f; ${bb} sleep 60; }`,
    `${bb} mkdir -p /proc /sys /dev /lower /rw /root`,
    `${bb} mount -t proc proc /proc`,
    `${bb} mount -t sysfs sys /sys`,
    `${bb} mount -t devtmpfs dev /dev`,
    ...modules.map((m) => `${bb} insmod /${shellQuote(m)} || fail "insmod ${m}"`),
    `${bb} mount -t 9p -o ${ninep},cache=loose,ro ${HOST_ROOT_TAG} /lower || fail "mount the host's root over 9p"`,
    `${bb} mount -t tmpfs -o mode=0755 rw /rw && ${bb} mkdir /rw/upper /rw/work || fail "tmpfs"`,
    `${bb} mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /root || fail "overlay"`,
    `${bb} mount -t proc proc /root/proc && ${bb} mount -t sysfs sys /root/sys || fail "proc"`,
    `${bb} mount -t devtmpfs dev /root/dev || fail "devtmpfs"`,
    `${bb} mkdir -p /root/dev/pts /root/dev/shm`,
    `${bb} mount -t devpts devpts /root/dev/pts && ${bb} mount -t tmpfs shm /root/dev/shm || fail "devpts"`,
    // The loopback interface: tests talk TCP to 127.0.0.1 (a gdb stub, a QMP socket).
    `${bb} ip link set lo up || fail "bring up lo"`,
    `${bb} mkdir -p /share && ${bb} mount -t 9p -o ${ninep},cache=none ${SHARE_TAG} /share || fail "mount the share"`,
    `(while ${bb} touch /share/${ALIVE_FILE}; do ${bb} sleep ${ALIVE_INTERVAL_SECONDS}; done) &`,
    `while read tag path; do`,
    `  ${bb} mkdir -p "/root$path" && ${bb} mount -t 9p -o ${ninep},cache=none "$tag" "/root$path" || fail "mount $path"`,
    `done < /share/${MOUNTS_FILE}`,
    `[ -c /root/dev/kvm ] || fail "no /dev/kvm: kvm_amd did not bind (the emulated CPU offers no svm?)"`,
    `${bb} chmod 666 /root/dev/kvm`,
    `say "${READY_MARKER}"`,
    // COM2 is the job's terminal: a new session with it as the controlling tty, so that raw mode,
    // job control and Ctrl-C behave as in a terminal on the host.
    `read tag share < /share/${MOUNTS_FILE}`, // the first line is the share itself
    `${bb} setsid -c ${bb} chroot /root /bin/sh "$share/${JOB_FILE}" <>/dev/ttyS1 >&0 2>&0`,
    `${bb} sync`,
    `${bb} poweroff -f`,
    "",
  ].join("\n");
}

/** What the job needs to run the command as it would run on the host. */
export interface JobSpec {
  /** The command and its arguments. */
  argv: readonly string[];
  /** Working directory (a host path; the same inside). */
  cwd: string;
  /** Environment of the command. */
  env: Readonly<Record<string, string>>;
  /** Where the share is mounted (the host path). */
  sharePath: string;
  /** The host's terminal size when the host's stdin is a terminal; raw bytes otherwise. */
  terminal?: { rows: number; columns: number };
}

/** The job script the chroot runs: terminal mode, directory, environment, command, status. */
export function jobScript(job: JobSpec): string {
  const stty = job.terminal
    ? `stty sane rows ${job.terminal.rows} cols ${job.terminal.columns}`
    : "stty raw -echo"; // bytes pass unchanged both ways (no CR added before LF)
  return [
    "# written by kvm-ts for one run in the nested VM",
    `${stty} 2>/dev/null`,
    `cd ${shellQuote(job.cwd)} || exit 126`,
    ...Object.entries(job.env).map(([k, v]) => `export ${k}=${shellQuote(v)}`),
    job.argv.map(shellQuote).join(" "),
    `echo $? > ${shellQuote(`${job.sharePath}/${STATUS_FILE}`)}`,
    "",
  ].join("\n");
}
