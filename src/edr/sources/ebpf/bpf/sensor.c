// edr eBPF sensor: tracepoints and syscall tracepoints (no kprobes, no
// kernel struct dereferences), so it compiles against any distribution's
// headers and behaves the same on kernels whose struct layouts differ from
// those headers.  Record layouts are mirrored in edr/sources/ebpf/records.py:
// change both together.
//
// The one other kind of program: cgroup socket hooks for UDP (FAM_NETWORK,
// attached by sensor.py to the cgroup v2 root through BPF links, so they go
// away with the agent).  A UDP socket's local port is chosen inside the
// kernel after any syscall tracepoint could see it, and no tracepoint
// carries UDP addresses; the cgroup hooks' contexts (struct bpf_sock_addr,
// struct bpf_sock, struct __sk_buff) are stable uAPI views the kernel itself
// translates, so they need no struct offsets either.  They only observe:
// every one returns 1 (allow) and changes nothing.  Without them (no cgroup
// v2, an old kernel) UDP falls back to the syscall tracepoints below.
//
// fentry/fexit and BTF-typed programs are not used because some hosts refuse
// them.  The one read through bpf_get_current_task() is the effective uid at
// exec (current_euid() below), and only at offsets the compile child read
// from the running kernel's own BTF (kernel_btf.py), never from a header.
//
// Compile-time knobs (set by loader.py through -D):
//   FAM_PROCESS, FAM_NETWORK, FAM_FILE, FAM_DNS   which families to build
//   MAX_ARGS        argv entries captured per exec
//   ARGS_SIZE       argv bytes captured per exec
//   RB_PAGES_*      ring buffer size (pages) per family
//   TASK_REAL_CRED_OFF, CRED_EUID_OFF
//                   offsets of task_struct.real_cred and cred.euid in the
//                   running kernel (its BTF); absent: no effective uid

#include <uapi/linux/ptrace.h>

#define EV_EXEC 1
#define EV_FORK 2
#define EV_EXIT 3
#define EV_CHDIR 4
#define EV_CONNECT 10
#define EV_ACCEPT 11
#define EV_SENDTO 12
#define EV_FILE 20
#define EV_DNS 30

#define FAMILY_PROCESS 0
#define FAMILY_NETWORK 1
#define FAMILY_FILE 2
#define FAMILY_DNS 3

#define PATH_SIZE 512
#define SOCKADDR_SIZE 28
#define DNS_PAYLOAD 512

#define XF_ARGV_TRUNCATED 1
#define XF_NO_ARGV 2
#define XF_FILENAME_TRUNCATED 4

#define CLONE_THREAD_FLAG 0x00010000
#define AF_INET_ 2
#define AF_INET6_ 10
#define EINPROGRESS_ 115
#define SIGKILL_ 9

// exit xflags: how aux is to be read (records.py XF_EXIT_*)
#define XF_EXIT_CODE 1     // aux: the exit()/exit_group() status (0..255)
#define XF_EXIT_SIGNAL 2   // aux: the signal that killed the process

// network xflags (records.py XF_NET_*)
#define XF_NET_UNSENT 1    // a UDP socket connected and released without sending

// 56 bytes: "<QQHHIIIIi16s" in records.py
struct hdr {
    u64 ts;          // bpf_ktime_get_boot_ns
    u64 cgroup_id;
    u16 type;
    u16 xflags;
    u32 pid;         // tgid
    u32 tid;
    u32 uid;
    u32 gid;
    s32 aux;         // exec: ppid; fork: child pid; net/file: syscall result
    char comm[16];
};

BPF_PERCPU_ARRAY(lost, u64, 4);
BPF_HASH(ignored, u32, u8, 256);

static __always_inline void count_lost(int family)
{
    u64 *v = lost.lookup(&family);
    if (v)
        (*v)++;
}

static __always_inline int fill_hdr(struct hdr *h, u16 type)
{
    u64 pt = bpf_get_current_pid_tgid();
    u64 ug = bpf_get_current_uid_gid();
    h->ts = bpf_ktime_get_boot_ns();
    h->cgroup_id = bpf_get_current_cgroup_id();
    h->type = type;
    h->xflags = 0;
    h->pid = pt >> 32;
    h->tid = (u32)pt;
    h->uid = (u32)ug;
    h->gid = ug >> 32;
    h->aux = 0;
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
    return 0;
}

// Bound a record size so the verifier sees the bound at the call site (clang
// otherwise may pass the unclamped register to the helper).
static __always_inline u64 clamp_size(u64 v, u64 max)
{
    if (v > max)
        v = max;
    asm volatile("" : "+r"(v));
    if (v > max)
        v = max;
    return v;
}

// Wake-ups: flags 0 is the ring buffer's adaptive mode, where the kernel
// wakes the consumer only for a record written into an empty (fully
// consumed) ring.  User space then lets the ring fill for a short batch
// window before draining it (sensor.py), so under load there is one wake-up
// per batch, and a lone record at idle still wakes the consumer at once.
#define WAKE_FLAGS 0

static __always_inline int is_ignored(void)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    return ignored.lookup(&tgid) != 0;
}

static __always_inline u64 tgid_fd(s32 fd)
{
    return ((bpf_get_current_pid_tgid() >> 32) << 32) | (u32)fd;
}

// ------------------------------------------------------- file descriptors --
// Which file a descriptor is, for the paths of later *at() calls and fd-based
// changes made after the process is gone from /proc.  Entries are keyed by
// (tgid << 32 | fd), removed by close() and dup2/dup3, and carry the fd
// table's epoch: a process's fork or exec starts a new epoch (exec closes
// O_CLOEXEC descriptors without a close(); a reused pid finds the entries of
// its predecessor), and an entry of another epoch is not used.
// tgid -> epoch (the boot-clock time of its fork or last exec; 0: before the sensor)
BPF_TABLE("lru_hash", u32, u64, fd_epoch, 65536);

static __always_inline u64 current_epoch(void)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 *e = fd_epoch.lookup(&tgid);
    return e ? *e : 0;
}

#ifdef FAM_FILE
// files the sensor reported opened for writing, not closed since -> epoch:
// an fd-based change (fchmod, fchown, AT_EMPTY_PATH) of one of them is of
// the file that open named, which the decoder remembers
BPF_TABLE("lru_hash", u64, u64, write_fds, 16384);

// Directories (O_DIRECTORY) and O_PATH descriptors, with their path: absolute,
// or relative to the working directory (which the decoder knows).  A path
// relative to such a descriptor is joined to it in the kernel, so the decoder
// sees (AT_FDCWD, dir/name) however short-lived the process.
struct dir_ent {
    u64 epoch;
    u32 len;         // strlen(path)
    u32 pad;
    char path[PATH_SIZE];
};
BPF_TABLE("lru_hash", u64, struct dir_ent, dir_fds, 8192);
BPF_PERCPU_ARRAY(dir_heap, struct dir_ent, 1);
struct path_buf {
    char buf[PATH_SIZE * 2];
};
BPF_PERCPU_ARRAY(path_scratch, struct path_buf, 1);

static __always_inline struct dir_ent *dir_of(s32 fd)
{
    if (fd < 0)
        return 0;
    u64 k = tgid_fd(fd);
    struct dir_ent *d = dir_fds.lookup(&k);
    if (!d || d->epoch != current_epoch())
        return 0;
    return d;
}

// (*dfd, path) -> (AT_FDCWD, "<dir>/path") when *dfd is a directory the
// sensor saw opened.  path is a PATH_SIZE buffer; an empty path (AT_EMPTY_PATH,
// fchmod) becomes the descriptor's own path.  Returns 1 when joined.
static __always_inline int join_dirfd(s32 *dfd, char *path)
{
    if (*dfd < 0 || path[0] == '/')
        return 0;
    struct dir_ent *d = dir_of(*dfd);
    if (!d)
        return 0;
    u32 len = d->len;
    if (len == 0 || len >= PATH_SIZE - 1)
        return 0;
    u32 zero = 0;
    struct path_buf *b = path_scratch.lookup(&zero);
    if (!b)
        return 0;
    // masked after an opaque copy: clang would drop a mask it can prove
    // redundant, and the verifier needs to see the bound at the helper call
    u64 n = len;
    asm volatile("" : "+r"(n));
    n &= PATH_SIZE - 1;
    bpf_probe_read_kernel(b->buf, n, d->path);
    if (path[0]) {
        b->buf[n] = '/';
        u64 off = len + 1;
        asm volatile("" : "+r"(off));
        off &= PATH_SIZE - 1;
        if (bpf_probe_read_kernel_str(&b->buf[off], PATH_SIZE, path) < 0)
            return 0;
    } else {
        b->buf[n] = 0;
    }
    // longer than PATH_SIZE: truncated, as any captured path is
    bpf_probe_read_kernel_str(path, PATH_SIZE, b->buf);
    *dfd = -100;
    return 1;
}
#endif

// --------------------------------------------------------------- process --
#ifdef FAM_PROCESS
// the lifecycle lane: sized 4x the others by the loader, never to be lost
BPF_RINGBUF_OUTPUT(rb_process, RB_PAGES_PROCESS);

// The effective uid unknown (records.py EUID_UNKNOWN; the kernel's own
// INVALID_UID, which no task holds).
#define EUID_UNKNOWN 0xFFFFFFFF

// The current task's effective uid (init user namespace, as /proc shows it
// to the agent), read from its objective credentials (real_cred, what
// /proc/<pid>/status shows).  At sched_process_exec the new credentials are
// already committed, so this is the uid the new program runs as: a setuid
// program's owner.
static __always_inline u32 current_euid(void)
{
#if defined(TASK_REAL_CRED_OFF) && defined(CRED_EUID_OFF)
    u64 task = bpf_get_current_task();
    u64 cred = 0;
    u32 euid = 0;
    if (bpf_probe_read_kernel(&cred, sizeof(cred), (void *)(task + TASK_REAL_CRED_OFF)) || !cred)
        return EUID_UNKNOWN;
    if (bpf_probe_read_kernel(&euid, sizeof(euid), (void *)(cred + CRED_EUID_OFF)))
        return EUID_UNKNOWN;
    return euid;
#else
    return EUID_UNKNOWN;
#endif
}

// Compact: the record carries only the bytes used, argv (NUL-separated)
// then the filename, so a typical exec is ~150 bytes, not ~5 KiB.
// 80 bytes before the blob: "<HHIQII" after the header in records.py.
struct exec_rec {
    struct hdr h;
    u16 argc;
    u16 fname_len;   // bytes of the filename after the argv, NUL included
    u32 args_len;
    u64 start_ns;    // the process's fork time (parents map), 0 if forked before the sensor
    u32 euid;        // effective uid after the exec, EUID_UNKNOWN without the BTF offsets
    u32 pad;
    // argv then filename.  Twice ARGS_SIZE (+ a path) so that a read of up
    // to ARGS_SIZE bytes at any offset below ARGS_SIZE stays inside the
    // buffer, which is what the verifier checks.
    char blob[ARGS_SIZE * 2 + PATH_SIZE];
};

BPF_PERCPU_ARRAY(exec_heap, struct exec_rec, 1);
// in-flight execve argv per tid, consumed by sched_process_exec
BPF_HASH(execs, u32, struct exec_rec, 512);
// What a fork tells about the child, kept until the child's exec or exit.
// The parent: task->real_parent would need struct offsets.  The fork time:
// the identity active response checks is the kernel's start time of the task
// (task->start_boottime, field 22 of /proc/<pid>/stat in clock ticks), which
// copy_process() sets a few microseconds before sched_process_fork runs;
// reading it from the task would need struct offsets too, so the fork's own
// bpf_ktime_get_boot_ns() (the same clock, CLOCK_BOOTTIME) stands for it.  It
// is at most one clock tick later once both are truncated to ticks, the slack
// the responder allows (edr/platform/linux/kill.py).  An exec keeps the start
// time (even from a non-leader thread, which takes the leader's), so the exec
// record carries the fork's time, however long after the fork the exec comes.
struct parent_rec {
    u32 ppid;        // parent tgid
    u32 pad;
    u64 fork_ns;     // bpf_ktime_get_boot_ns() at the fork
};
// child tgid -> its parent and fork time, from sched_process_fork
BPF_TABLE("lru_hash", u32, struct parent_rec, parents, 65536);
// tid -> clone flags of the clone()/clone3() in flight: tells threads from processes
BPF_HASH(clone_flags, u32, u64, 4096);

static __always_inline int capture_argv(const char *const *argv)
{
    u32 zero = 0;
    struct exec_rec *rec = exec_heap.lookup(&zero);
    if (!rec)
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 off = 0;
    u32 argc = 0;
    u16 xflags = 0;
    int i;
    for (i = 0; i < MAX_ARGS; i++) {
        const char *p = 0;
        if (bpf_probe_read_user(&p, sizeof(p), &argv[i]) || !p)
            goto done;
        if (off >= ARGS_SIZE) {
            xflags |= XF_ARGV_TRUNCATED;
            goto done;
        }
        long n = bpf_probe_read_user_str(&rec->blob[off], ARGS_SIZE, p);
        if (n <= 0)
            goto done;
        off += n;
        argc++;
    }
    {
        // more arguments than MAX_ARGS?
        const char *p = 0;
        if (bpf_probe_read_user(&p, sizeof(p), &argv[MAX_ARGS]) == 0 && p)
            xflags |= XF_ARGV_TRUNCATED;
    }
done:
    if (off > ARGS_SIZE) {
        off = ARGS_SIZE;
        xflags |= XF_ARGV_TRUNCATED;
    }
    rec->h.xflags = xflags;
    rec->argc = argc;
    rec->args_len = off;
    execs.update(&tid, rec);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
    if (is_ignored())
        return 0;
    return capture_argv((const char *const *)args->argv);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
    if (is_ignored())
        return 0;
    return capture_argv((const char *const *)args->argv);
}

// A failed execve leaves its argv behind: drop it.
static __always_inline int exec_failed(long ret)
{
    if (ret < 0) {
        u32 tid = (u32)bpf_get_current_pid_tgid();
        execs.delete(&tid);
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_execve) { return exec_failed(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_execveat) { return exec_failed(args->ret); }

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    if (is_ignored())
        return 0;
    u32 old_tid = args->old_pid;
    struct exec_rec *rec = execs.lookup(&old_tid);
    u16 xflags = 0;
    if (!rec) {
        // exec without a traced execve (kernel usermode helper): no argv
        u32 zero = 0;
        rec = exec_heap.lookup(&zero);
        if (!rec)
            return 0;
        rec->argc = 0;
        rec->args_len = 0;
        xflags = XF_NO_ARGV;
    } else {
        xflags = rec->h.xflags;
    }
    fill_hdr(&rec->h, EV_EXEC);
    rec->h.xflags = xflags;
    // exec closed the O_CLOEXEC descriptors without a close()
    fd_epoch.update(&rec->h.pid, &rec->h.ts);
    struct parent_rec *pp = parents.lookup(&rec->h.pid);
    rec->h.aux = pp ? pp->ppid : 0;
    rec->start_ns = pp ? pp->fork_ns : 0;
    rec->euid = current_euid();
    rec->pad = 0;
    u64 off = clamp_size(rec->args_len, ARGS_SIZE);
    long n = bpf_probe_read_kernel_str(&rec->blob[off], PATH_SIZE,
                                       (char *)args + (args->data_loc_filename & 0xFFFF));
    if (n < 0)
        n = 0;
    rec->fname_len = n;
    u64 size = clamp_size(offsetof(struct exec_rec, blob) + off + n, sizeof(struct exec_rec));
    if (rb_process.ringbuf_output(rec, size, WAKE_FLAGS))
        count_lost(FAMILY_PROCESS);
    execs.delete(&old_tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = args->clone_flags;
    clone_flags.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = 0;
    // struct clone_args starts with the u64 flags
    bpf_probe_read_user(&flags, sizeof(flags), (void *)args->uargs);
    clone_flags.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u64 pt = bpf_get_current_pid_tgid();
    u32 tid = (u32)pt;
    u32 ptgid = pt >> 32;
    u64 *flags = clone_flags.lookup(&tid);
    int thread = flags && (*flags & CLONE_THREAD_FLAG);
    if (flags)
        clone_flags.delete(&tid);
    // threads share the process; kthreadd's children are kernel threads
    if (thread || ptgid == 2)
        return 0;
    u32 child = args->child_pid;
    // reported even when the parent is ignored (the agent): the record is
    // about the child, whose working directory, parent and start it establishes
    struct hdr h = {};
    fill_hdr(&h, EV_FORK);
    h.aux = child;
    // the child has not run yet (it is woken after this tracepoint), so its
    // exec cannot look the entry up before it exists
    struct parent_rec pr = {};
    pr.ppid = ptgid;
    pr.fork_ns = h.ts;
    parents.update(&child, &pr);
    // a new fd table (a copy of the parent's, but the sensor's entries are per tgid)
    fd_epoch.update(&child, &h.ts);
    if (rb_process.ringbuf_output(&h, sizeof(h), WAKE_FLAGS))
        count_lost(FAMILY_PROCESS);
    return 0;
}

// How a process ends.  sched_process_exit carries no exit code, and the
// task's exit_code is a struct field (an offset), so the status is pieced
// together from what the kernel says on the way out, in the dying process:
//  - exit_group(code), or exit(code) from the group leader: the code;
//  - a signal delivered with its default action when that action terminates
//    (signal_deliver, sa_handler == SIG_DFL).  A group exit already under way
//    shows as SIGKILL in every thread (get_signal's "already marked for
//    death": a default-fatal signal that took complete_signal's fast path,
//    a real SIGKILL, or another thread's exit_group); the signal that started
//    it is the default-fatal one last generated for the process
//    (signal_generate), else SIGKILL itself.
// The first of these per process wins (an exit_group already recorded is not
// overwritten by the SIGKILLs it sends the other threads), except that an exit
// syscall replaces a signal record: a process that calls exit_group was not
// killed by the signal (a PID namespace's init survives SIG_DFL signals).
#define EXIT_NONFATAL_DEFAULT ((1u << 17) | (1u << 18) | (1u << 19) | (1u << 20) | (1u << 21) | \
                               (1u << 22) | (1u << 23) | (1u << 28))
struct exit_status {
    u32 kind;        // XF_EXIT_CODE | XF_EXIT_SIGNAL
    s32 value;
};
// tgid -> how it is ending; removed when its leader exits
BPF_TABLE("lru_hash", u32, struct exit_status, exit_status, 16384);
// target pid -> the last default-fatal signal generated for it
BPF_TABLE("lru_hash", u32, u32, fatal_sent, 16384);

// SIGCHLD, SIGCONT, the stop signals, SIGURG and SIGWINCH do not terminate by default
static __always_inline int default_fatal(int sig)
{
    if (sig <= 0 || sig > 64)
        return 0;
    if (sig < 32)
        return !((1u << sig) & EXIT_NONFATAL_DEFAULT);
    return 1;   // real-time signals terminate by default
}

static __always_inline int exit_syscall(int code, int group)
{
    u64 pt = bpf_get_current_pid_tgid();
    u32 tgid = pt >> 32;
    if (!group && (u32)pt != tgid)
        return 0;   // exit() of a thread other than the leader ends only that thread
    struct exit_status *old = exit_status.lookup(&tgid);
    if (old && old->kind == XF_EXIT_CODE)
        return 0;   // the group's first exit_group sets its status
    struct exit_status st = {XF_EXIT_CODE, code & 0xff};
    exit_status.update(&tgid, &st);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group) { return exit_syscall(args->error_code, 1); }
TRACEPOINT_PROBE(syscalls, sys_enter_exit) { return exit_syscall(args->error_code, 0); }

TRACEPOINT_PROBE(signal, signal_generate)
{
    // TRACE_SIGNAL_DELIVERED (0) and TRACE_SIGNAL_LOSE_INFO (4) queue the signal
    int result = args->result;
    int sig = args->sig;
    if ((result != 0 && result != 4) || !default_fatal(sig))
        return 0;
    u32 target = args->pid;
    u32 s = sig;
    fatal_sent.update(&target, &s);
    return 0;
}

TRACEPOINT_PROBE(signal, signal_deliver)
{
    u64 pt = bpf_get_current_pid_tgid();
    u32 tgid = pt >> 32;
    u32 tid = (u32)pt;
    u32 sig = args->sig;
    u64 handler = args->sa_handler;
    if (handler != 0 || !default_fatal(sig)) {
        if (handler > 1) {
            // a handler runs: that signal ends nothing, forget it
            u32 *sent = fatal_sent.lookup(&tgid);
            if (sent && *sent == sig)
                fatal_sent.delete(&tgid);
        }
        return 0;
    }
    if (sig == SIGKILL_) {
        u32 *sent = fatal_sent.lookup(&tid);
        if (!sent)
            sent = fatal_sent.lookup(&tgid);
        if (sent)
            sig = *sent;
    }
    struct exit_status st = {XF_EXIT_SIGNAL, sig};
    exit_status.insert(&tgid, &st);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 pt = bpf_get_current_pid_tgid();
    // a process ends when its group leader exits; other threads are noise
    if ((u32)pt != (u32)(pt >> 32))
        return 0;
    u32 tgid = pt >> 32;
    parents.delete(&tgid);
    struct exit_status status = {};
    struct exit_status *st = exit_status.lookup(&tgid);
    if (st) {
        status = *st;
        exit_status.delete(&tgid);
    }
    fatal_sent.delete(&tgid);
    if (is_ignored())
        return 0;
    struct hdr h = {};
    fill_hdr(&h, EV_EXIT);
    h.xflags = status.kind;
    h.aux = status.value;
    if (rb_process.ringbuf_output(&h, sizeof(h), WAKE_FLAGS))
        count_lost(FAMILY_PROCESS);
    return 0;
}

// chdir/fchdir: the decoder keeps each process's working directory from
// these (and fork/exec), to make relative paths absolute after the process
// has exited and /proc/pid/cwd is gone.
struct chdir_rec {
    struct hdr h;
    s32 fd;          // fchdir: the fd; chdir: -100
    u32 pad;
    char path[PATH_SIZE];
};
BPF_PERCPU_ARRAY(chdir_heap, struct chdir_rec, 1);
BPF_HASH(chdir_inflight, u32, struct chdir_rec, 1024);

static __always_inline int chdir_enter(s32 fd, const char *path)
{
    if (is_ignored())
        return 0;
    u32 zero = 0;
    struct chdir_rec *c = chdir_heap.lookup(&zero);
    if (!c)
        return 0;
    c->fd = fd;
    c->path[0] = 0;
    if (path && bpf_probe_read_user_str(c->path, PATH_SIZE, path) < 0)
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    chdir_inflight.update(&tid, c);
    return 0;
}

static __always_inline int chdir_exit(long ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct chdir_rec *c = chdir_inflight.lookup(&tid);
    if (!c)
        return 0;
    if (ret == 0) {
        fill_hdr(&c->h, EV_CHDIR);
#ifdef FAM_FILE
        // fchdir to a directory the sensor saw opened: its path, as chdir(path) would give it
        if (c->fd >= 0)
            join_dirfd(&c->fd, c->path);
#endif
        if (rb_process.ringbuf_output(c, sizeof(*c), WAKE_FLAGS))
            count_lost(FAMILY_PROCESS);
    }
    chdir_inflight.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_chdir) { return chdir_enter(-100, args->filename); }
TRACEPOINT_PROBE(syscalls, sys_enter_fchdir) { return chdir_enter(args->fd, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_chdir) { return chdir_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchdir) { return chdir_exit(args->ret); }
#endif // FAM_PROCESS

// ------------------------------------------------------- network and dns --
#if defined(FAM_NETWORK) || defined(FAM_DNS)
struct sock_args {
    u64 uaddr;     // user pointer: sockaddr (connect) or peer buffer (accept) or data buffer (recv)
    u64 ualen;     // accept: int *addrlen
    s32 fd;
    u32 addrlen;
    u8 addr[SOCKADDR_SIZE];
    u32 tcp;       // connect: a TCP handshake started (reported from the state changes)
    u32 udp;       // connect: a UDP socket, reported by the cgroup hooks
};
BPF_HASH(sock_inflight, u32, struct sock_args, 4096);

// user msghdr, the part we read
struct umsghdr {
    u64 name;
    u32 namelen;
    u32 pad;
    u64 iov;
    u64 iovlen;
};
struct uiovec {
    u64 base;
    u64 len;
};

static __always_inline u16 sa_family(const u8 *addr) { return *(const u16 *)addr; }
static __always_inline u16 sa_port(const u8 *addr) { return (addr[2] << 8) | addr[3]; }

static __always_inline int read_sockaddr(u8 *dst, const void *uaddr, u32 len)
{
    if (!uaddr)
        return -1;
    if (len < 2)
        return -1;
    return bpf_probe_read_user(dst, clamp_size(len, SOCKADDR_SIZE), uaddr);
}
#endif

#ifdef FAM_NETWORK
BPF_RINGBUF_OUTPUT(rb_network, RB_PAGES_NETWORK);

// 56 + 72 bytes
struct net_rec {
    struct hdr h;
    s32 fd;
    u16 proto;       // IPPROTO_TCP/UDP when the kernel knows, else 0
    u16 addrlen;
    u8 addr[SOCKADDR_SIZE];    // remote
    u16 laddrlen;
    u16 pad;
    u8 laddr[SOCKADDR_SIZE];   // local, when the kernel knows it
    u32 pad2;
};

// (tgid, family, port, address): UDP destinations already reported, so that a
// datagram stream is one network_connection per new peer, not one per packet
struct udp_key {
    u32 tgid;
    u8 addr[SOCKADDR_SIZE];
};
BPF_TABLE("lru_hash", struct udp_key, u8, udp_seen, 16384);

// laddr: the local end when the kernel gave it (NULL: the decoder asks the live process)
static __always_inline int emit_net(u16 type, s32 fd, s32 ret, const u8 *addr, u32 addrlen,
                                    const u8 *laddr, u16 proto)
{
    struct net_rec r = {};
    fill_hdr(&r.h, type);
    r.h.aux = ret;
    r.fd = fd;
    r.proto = proto;
    r.addrlen = addrlen;
    if (addrlen)
        __builtin_memcpy(r.addr, addr, SOCKADDR_SIZE);
    if (laddr) {
        __builtin_memcpy(r.laddr, laddr, SOCKADDR_SIZE);
        r.laddrlen = SOCKADDR_SIZE;
    }
    if (rb_network.ringbuf_output(&r, sizeof(r), WAKE_FLAGS))
        count_lost(FAMILY_NETWORK);
    return 0;
}

#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define TCP_ESTABLISHED_ 1
#define TCP_SYN_SENT_ 2
#define TCP_SYN_RECV_ 3

// TCP connects are reported from the socket's state changes, which carry
// both ends (the source port is only chosen inside connect, out of reach
// of the syscall tracepoints): the SYN_SENT change runs inside connect(), in
// the caller's context, and parks the record; the next change (ESTABLISHED,
// or CLOSE when the attempt failed) completes and sends it.  So a client
// that exits at once still has its source address and port.
BPF_TABLE("lru_hash", u64, struct net_rec, tcp_pending, 4096);

// Accepted TCP connections: the server side's new socket goes SYN_RECV ->
// ESTABLISHED in softirq context, with both ends, before accept() can return
// it; accept() then learns the peer (the address the kernel writes for the
// caller) and takes the local end from here, keyed by that peer.  So a server
// that closes at once still has its destination.  An accept() that asks for
// no peer address falls back to the live process (the decoder counts it).
struct peer_key {
    u8 addr[16];     // the remote address, IPv4 as ::ffff:a.b.c.d
    u32 port;        // the remote port, host order
};
BPF_TABLE("lru_hash", struct peer_key, struct net_rec, tcp_accepted, 8192);

static __always_inline void peer_key_of(struct peer_key *k, const u8 *sa)
{
    __builtin_memset(k, 0, sizeof(*k));
    if (sa_family(sa) == AF_INET_) {
        k->addr[10] = 0xff;
        k->addr[11] = 0xff;
        __builtin_memcpy(k->addr + 12, sa + 4, 4);
    } else {
        __builtin_memcpy(k->addr, sa + 8, 16);
    }
    k->port = sa_port(sa);
}

static __always_inline void put_sockaddr(u8 *dst, u16 family, u16 port, const u8 *a4, const u8 *a6)
{
    __builtin_memset(dst, 0, SOCKADDR_SIZE);
    dst[0] = family & 0xff;
    dst[1] = family >> 8;
    dst[2] = port >> 8;
    dst[3] = port & 0xff;
    if (family == AF_INET_)
        __builtin_memcpy(dst + 4, a4, 4);
    else
        __builtin_memcpy(dst + 8, a6, 16);
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP_)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->newstate == TCP_SYN_SENT_) {
        u32 tid = (u32)bpf_get_current_pid_tgid();
        struct sock_args *a = sock_inflight.lookup(&tid);
        if (!a)
            return 0;   // not a traced connect() (an ignored pid, TCP fast open)
        a->tcp = 1;
        struct net_rec r = {};
        fill_hdr(&r.h, EV_CONNECT);
        r.fd = a->fd;
        r.proto = IPPROTO_TCP_;
        r.addrlen = a->addrlen;
        __builtin_memcpy(r.addr, a->addr, SOCKADDR_SIZE);
        tcp_pending.update(&sk, &r);
        return 0;
    }
    if (args->oldstate == TCP_SYN_RECV_ && args->newstate == TCP_ESTABLISHED_) {
        u16 fam = args->family;
        struct net_rec e = {};
        put_sockaddr(e.laddr, fam, args->sport, args->saddr, args->saddr_v6);
        put_sockaddr(e.addr, fam, args->dport, args->daddr, args->daddr_v6);
        struct peer_key k = {};
        peer_key_of(&k, e.addr);
        tcp_accepted.update(&k, &e);
        return 0;
    }
    if (args->oldstate != TCP_SYN_SENT_)
        return 0;
    struct net_rec *r = tcp_pending.lookup(&sk);
    if (!r)
        return 0;
    u16 fam = args->family;
    put_sockaddr(r->laddr, fam, args->sport, args->saddr, args->saddr_v6);
    put_sockaddr(r->addr, fam, args->dport, args->daddr, args->daddr_v6);
    r->laddrlen = SOCKADDR_SIZE;
    r->addrlen = SOCKADDR_SIZE;
    // a failed attempt is reported too: an IOC on the destination must see it
    r->h.aux = args->newstate == TCP_ESTABLISHED_ ? 0 : -1;
    if (rb_network.ringbuf_output(r, sizeof(*r), WAKE_FLAGS))
        count_lost(FAMILY_NETWORK);
    tcp_pending.delete(&sk);
    return 0;
}

// A datagram sent to an explicit address: report the first one per peer.
static __always_inline int udp_dest(s32 fd, const u8 *addr, u32 addrlen)
{
    struct udp_key k = {};
    k.tgid = bpf_get_current_pid_tgid() >> 32;
    __builtin_memcpy(k.addr, addr, SOCKADDR_SIZE);
    // the port and address, not sin6_flowinfo, identify the peer
    if (sa_family(addr) == AF_INET6_)
        __builtin_memset(k.addr + 4, 0, 4);
    if (udp_seen.lookup(&k))
        return 0;
    u8 one = 1;
    udp_seen.update(&k, &one);
    return emit_net(EV_SENDTO, fd, 0, addr, addrlen, 0, 0);
}

// [0]: 1 once sensor.py attached the cgroup socket hooks below: UDP is then
// reported by them, with both ends, and no longer from the syscalls
BPF_ARRAY(net_cfg, u32, 1);

static __always_inline int udp_hooks_on(void)
{
    u32 zero = 0;
    u32 *on = net_cfg.lookup(&zero);
    return on && *on;
}

// A connected UDP socket waiting for its first datagram: the record connect()
// started (who, where to), completed with both ends when a datagram leaves.
BPF_SK_STORAGE(udp_parked, struct net_rec);

// struct bpf_sock -> sockaddr bytes.  src_port is host order, dst_port network
// order.  Every field is loaded whatever the family: the verifier allows only
// plain loads from a socket pointer, and a load chosen by a branch may be
// compiled into pointer arithmetic, which it rejects.
static __always_inline void sock_local(u8 *dst, struct bpf_sock *sk)
{
    u32 fam = sk->family;
    u32 a4 = sk->src_ip4;
    u32 a6[4];
    a6[0] = sk->src_ip6[0];
    a6[1] = sk->src_ip6[1];
    a6[2] = sk->src_ip6[2];
    a6[3] = sk->src_ip6[3];
    put_sockaddr(dst, fam, sk->src_port, (u8 *)&a4, (u8 *)a6);
}

static __always_inline void sock_remote(u8 *dst, struct bpf_sock *sk)
{
    u32 fam = sk->family;
    u32 a4 = sk->dst_ip4;
    u32 a6[4];
    a6[0] = sk->dst_ip6[0];
    a6[1] = sk->dst_ip6[1];
    a6[2] = sk->dst_ip6[2];
    a6[3] = sk->dst_ip6[3];
    put_sockaddr(dst, fam, bpf_ntohs(sk->dst_port), (u8 *)&a4, (u8 *)a6);
}

// The address connect()/sendto() was given, from a sock_addr hook's context.
// v6 must be a constant: the verifier lets an IPv4 hook read only user_ip4
// and an IPv6 hook only user_ip6, so each hook gets its own copy.
static __always_inline void user_addr(u8 *dst, struct bpf_sock_addr *ctx, int v6)
{
    u32 a[4] = {};
    if (v6) {
        a[0] = ctx->user_ip6[0];
        a[1] = ctx->user_ip6[1];
        a[2] = ctx->user_ip6[2];
        a[3] = ctx->user_ip6[3];
    } else {
        a[0] = ctx->user_ip4;
    }
    put_sockaddr(dst, v6 ? AF_INET6_ : AF_INET_, bpf_ntohs(ctx->user_port), (u8 *)a, (u8 *)a);
}

// cgroup connect4/connect6: runs inside connect(), before the kernel binds an
// unbound socket to its ephemeral port, so the record is parked on the
// socket until a datagram shows both ends.
static __always_inline int udp_connect_hook(struct bpf_sock_addr *ctx, int v6)
{
    if (ctx->protocol != IPPROTO_UDP_ || is_ignored())
        return 1;
    struct bpf_sock *sk = ctx->sk;
    if (!sk)
        return 1;
    struct net_rec *p = udp_parked.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!p)
        return 1;
    fill_hdr(&p->h, EV_CONNECT);
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct sock_args *a = sock_inflight.lookup(&tid);
    p->fd = -1;
    if (a) {
        p->fd = a->fd;
        a->udp = 1;   // sys_exit_connect leaves it to the hooks
    }
    p->proto = IPPROTO_UDP_;
    user_addr(p->addr, ctx, v6);
    p->addrlen = SOCKADDR_SIZE;
    p->laddrlen = 0;
    return 1;
}

int edr_udp_connect4(struct bpf_sock_addr *ctx) { return udp_connect_hook(ctx, 0); }
int edr_udp_connect6(struct bpf_sock_addr *ctx) { return udp_connect_hook(ctx, 1); }

// cgroup sendmsg4/sendmsg6: a datagram with an explicit destination
// (sendto/sendmsg/sendmmsg on an unconnected socket), after the kernel bound
// the socket: both ends are known.  The first datagram per (process, peer) is
// reported.  A wildcard source address is left to the decoder (routing).
static __always_inline int udp_sendmsg_hook(struct bpf_sock_addr *ctx, int v6)
{
    if (is_ignored())
        return 1;
    struct bpf_sock *sk = ctx->sk;
    if (!sk)
        return 1;
    struct udp_key k = {};
    k.tgid = bpf_get_current_pid_tgid() >> 32;
    user_addr(k.addr, ctx, v6);
    // sin6_flowinfo is not part of the peer (put_sockaddr leaves it zero)
    if (udp_seen.lookup(&k))
        return 1;
    u8 one = 1;
    udp_seen.update(&k, &one);
    u8 local[SOCKADDR_SIZE] = {};
    sock_local(local, sk);
    emit_net(EV_SENDTO, -1, 0, k.addr, SOCKADDR_SIZE, local, IPPROTO_UDP_);
    return 1;
}

int edr_udp_sendmsg4(struct bpf_sock_addr *ctx) { return udp_sendmsg_hook(ctx, 0); }
int edr_udp_sendmsg6(struct bpf_sock_addr *ctx) { return udp_sendmsg_hook(ctx, 1); }

// cgroup egress: every packet leaving a socket passes here, so the fast path
// is a protocol test and, for UDP, a socket-local storage look-up that misses.
// A parked connect() record is completed by its socket's first datagram.
int edr_udp_egress(struct __sk_buff *skb)
{
    struct bpf_sock *sk = skb->sk;
    if (!sk)
        return 1;
    sk = bpf_sk_fullsock(sk);
    if (!sk || sk->protocol != IPPROTO_UDP_)
        return 1;
    struct net_rec *p = udp_parked.sk_storage_get(sk, 0, 0);
    if (!p)
        return 1;
    p->h.ts = bpf_ktime_get_boot_ns();
    sock_local(p->laddr, sk);
    p->laddrlen = SOCKADDR_SIZE;
    sock_remote(p->addr, sk);
    p->addrlen = SOCKADDR_SIZE;
    if (rb_network.ringbuf_output(p, sizeof(*p), WAKE_FLAGS))
        count_lost(FAMILY_NETWORK);
    udp_parked.sk_storage_delete(sk);
    return 1;
}

// cgroup sock_release: a connected UDP socket closed before any datagram left
// (a route probe such as getaddrinfo's, or one a local firewall dropped).
// The attempt is reported with what connect() named; the release hook may not
// read the socket's source end, so the record has none.
int edr_udp_release(struct bpf_sock *ctx)
{
    if (ctx->protocol != IPPROTO_UDP_)
        return 1;
    struct net_rec *p = udp_parked.sk_storage_get(ctx, 0, 0);
    if (!p)
        return 1;
    p->h.ts = bpf_ktime_get_boot_ns();
    p->h.xflags = XF_NET_UNSENT;
    if (rb_network.ringbuf_output(p, sizeof(*p), WAKE_FLAGS))
        count_lost(FAMILY_NETWORK);
    // no delete (not a helper this program type may call): the storage goes with the socket
    return 1;
}
#endif

#ifdef FAM_DNS
BPF_RINGBUF_OUTPUT(rb_dns, RB_PAGES_DNS);

struct dns_rec {
    struct hdr h;
    s32 fd;
    u16 direction;   // 0 query sent, 1 answer received
    u16 len;         // payload bytes captured
    u8 addr[SOCKADDR_SIZE];
    u32 pad;
    u8 payload[DNS_PAYLOAD * 2];
};
BPF_PERCPU_ARRAY(dns_heap, struct dns_rec, 1);
// (tgid << 32 | fd) of sockets that talked to port 53: their reads are answers
BPF_TABLE("lru_hash", u64, u8, dns_fds, 4096);
// tid -> receive in flight on a DNS socket
BPF_HASH(dns_recv, u32, struct sock_args, 1024);

static __always_inline u64 fd_key(s32 fd)
{
    return ((bpf_get_current_pid_tgid() >> 32) << 32) | (u32)fd;
}

static __always_inline int mark_dns_fd(s32 fd)
{
    u64 k = fd_key(fd);
    u8 one = 1;
    dns_fds.update(&k, &one);
    return 0;
}

static __always_inline int is_dns_fd(s32 fd)
{
    u64 k = fd_key(fd);
    return dns_fds.lookup(&k) != 0;
}

static __always_inline int emit_dns(u16 direction, s32 fd, const u8 *addr, const void *ubuf, u64 len)
{
    u32 zero = 0;
    struct dns_rec *r = dns_heap.lookup(&zero);
    if (!r || !ubuf)
        return 0;
    fill_hdr(&r->h, EV_DNS);
    r->fd = fd;
    r->direction = direction;
    if (addr)
        __builtin_memcpy(r->addr, addr, SOCKADDR_SIZE);
    else
        __builtin_memset(r->addr, 0, SOCKADDR_SIZE);
    if (len < 12)   // shorter than a DNS header
        return 0;
    len = clamp_size(len, DNS_PAYLOAD);
    if (bpf_probe_read_user(r->payload, len, ubuf))
        return 0;
    r->len = len;
    u64 size = clamp_size(offsetof(struct dns_rec, payload) + len, sizeof(struct dns_rec));
    if (rb_dns.ringbuf_output(r, size, WAKE_FLAGS))
        count_lost(FAMILY_DNS);
    return 0;
}
#endif

#if defined(FAM_NETWORK) || defined(FAM_DNS)
// A send with an explicit destination (sendto / sendmsg / first sendmmsg entry).
static __always_inline int on_send(s32 fd, const void *uaddr, u32 alen, const void *buf, u64 len)
{
    u8 addr[SOCKADDR_SIZE] = {};
    int have_addr = uaddr && read_sockaddr(addr, uaddr, alen) == 0 &&
                    (sa_family(addr) == AF_INET_ || sa_family(addr) == AF_INET6_);
#ifdef FAM_NETWORK
    // with the cgroup hooks, UDP destinations are reported by udp_sendmsg_hook
    if (have_addr && !udp_hooks_on())
        udp_dest(fd, addr, alen > SOCKADDR_SIZE ? SOCKADDR_SIZE : alen);
#endif
#ifdef FAM_DNS
    if (have_addr && sa_port(addr) == 53) {
        mark_dns_fd(fd);
        emit_dns(0, fd, addr, buf, len);
    } else if (!have_addr && is_dns_fd(fd)) {
        emit_dns(0, fd, 0, buf, len);
    }
#endif
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{
    if (is_ignored())
        return 0;
    return on_send(args->fd, args->addr, args->addr_len, args->buff, args->len);
}

static __always_inline int on_sendmsg(s32 fd, const void *umsg)
{
    struct umsghdr m = {};
    struct uiovec iov = {};
    if (bpf_probe_read_user(&m, sizeof(m), umsg))
        return 0;
    if (m.iov && m.iovlen)
        bpf_probe_read_user(&iov, sizeof(iov), (void *)m.iov);
    return on_send(fd, (void *)m.name, m.namelen, (void *)iov.base, iov.len);
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
    if (is_ignored())
        return 0;
    return on_sendmsg(args->fd, args->msg);
}

// glibc's resolver sends the A and AAAA queries with one sendmmsg
TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg)
{
    if (is_ignored())
        return 0;
    s32 fd = args->fd;
    const u8 *base = (const u8 *)args->mmsg;
    u32 vlen = args->vlen;
    // struct mmsghdr is a msghdr (56 bytes) and a u32 length, padded to 64
    if (vlen > 0)
        on_sendmsg(fd, base);
    if (vlen > 1)
        on_sendmsg(fd, base + 64);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    if (is_ignored())
        return 0;
    struct sock_args a = {};
    if (read_sockaddr(a.addr, args->uservaddr, args->addrlen))
        return 0;
    u16 fam = sa_family(a.addr);
    if (fam != AF_INET_ && fam != AF_INET6_)
        return 0;
    a.fd = args->fd;
    a.addrlen = args->addrlen > SOCKADDR_SIZE ? SOCKADDR_SIZE : args->addrlen;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    sock_inflight.update(&tid, &a);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct sock_args *a = sock_inflight.lookup(&tid);
    if (!a)
        return 0;
    long ret = args->ret;
    // 0, or a non-blocking connect under way: both are connection attempts
    if (ret == 0 || ret == -EINPROGRESS_) {
#ifdef FAM_DNS
        if (sa_port(a->addr) == 53)
            mark_dns_fd(a->fd);
#endif
#ifdef FAM_NETWORK
        // TCP is reported by inet_sock_set_state and UDP by the cgroup hooks,
        // with both ends; what is left (no hooks, other protocols) from here
        if (!a->tcp && !a->udp)
            emit_net(EV_CONNECT, a->fd, ret, a->addr, a->addrlen, 0, 0);
#endif
    }
    sock_inflight.delete(&tid);
    return 0;
}
#endif

#ifdef FAM_NETWORK
static __always_inline int accept_enter(s32 fd, void *upeer, void *ulen)
{
    if (is_ignored())
        return 0;
    struct sock_args a = {};
    a.fd = fd;
    a.uaddr = (u64)upeer;
    a.ualen = (u64)ulen;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    sock_inflight.update(&tid, &a);
    return 0;
}

static __always_inline int accept_exit(long ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct sock_args *a = sock_inflight.lookup(&tid);
    if (!a)
        return 0;
    if (ret >= 0) {
        u8 addr[SOCKADDR_SIZE] = {};
        u32 alen = 0;
        int len = 0;
        // the kernel wrote the peer address and its length at exit
        if (a->uaddr && a->ualen && bpf_probe_read_user(&len, sizeof(len), (void *)a->ualen) == 0 &&
            read_sockaddr(addr, (void *)a->uaddr, len) == 0)
            alen = len > SOCKADDR_SIZE ? SOCKADDR_SIZE : len;
        u16 fam = alen ? sa_family(addr) : 0;
        if (alen && fam != AF_INET_ && fam != AF_INET6_)
            goto out;   // a Unix or other non-IP socket
        struct net_rec *e = 0;
        struct peer_key k = {};
        if (alen >= 8) {
            peer_key_of(&k, addr);
            e = tcp_accepted.lookup(&k);
        }
        if (e) {
            // both ends as the kernel's socket had them
            emit_net(EV_ACCEPT, ret, a->fd, e->addr, SOCKADDR_SIZE, e->laddr, IPPROTO_TCP_);
            tcp_accepted.delete(&k);
        } else {
            emit_net(EV_ACCEPT, ret, a->fd, addr, alen, 0, 0);
        }
    }
out:
    sock_inflight.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept) { return accept_enter(args->fd, args->upeer_sockaddr, args->upeer_addrlen); }
TRACEPOINT_PROBE(syscalls, sys_enter_accept4) { return accept_enter(args->fd, args->upeer_sockaddr, args->upeer_addrlen); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return accept_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return accept_exit(args->ret); }
#endif

#ifdef FAM_DNS
static __always_inline int recv_enter(s32 fd, const void *buf, const void *uaddr)
{
    if (!is_dns_fd(fd))
        return 0;
    struct sock_args a = {};
    a.fd = fd;
    a.uaddr = (u64)buf;
    a.ualen = (u64)uaddr;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    dns_recv.update(&tid, &a);
    return 0;
}

static __always_inline int recv_exit(long ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct sock_args *a = dns_recv.lookup(&tid);
    if (!a)
        return 0;
    if (ret > 0) {
        u8 addr[SOCKADDR_SIZE] = {};
        if (a->ualen)
            bpf_probe_read_user(addr, sizeof(addr), (void *)a->ualen);
        emit_dns(1, a->fd, addr, (void *)a->uaddr, ret);
    }
    dns_recv.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    return recv_enter(args->fd, args->ubuf, args->addr);
}

TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
    s32 fd = args->fd;
    if (!is_dns_fd(fd))
        return 0;
    struct umsghdr m = {};
    struct uiovec iov = {};
    if (bpf_probe_read_user(&m, sizeof(m), args->msg))
        return 0;
    if (m.iov && m.iovlen)
        bpf_probe_read_user(&iov, sizeof(iov), (void *)m.iov);
    return recv_enter(fd, (void *)iov.base, (void *)m.name);
}

// Go's resolver uses read/write on a connected UDP socket.  These two are
// hot syscalls: the fast path is one hash lookup that misses.
TRACEPOINT_PROBE(syscalls, sys_enter_read)
{
    return recv_enter(args->fd, args->buf, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
    s32 fd = args->fd;
    if (!is_dns_fd(fd) || is_ignored())
        return 0;
    return emit_dns(0, fd, 0, args->buf, args->count);
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return recv_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return recv_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return recv_exit(args->ret); }

#endif // FAM_DNS

#if defined(FAM_DNS) || defined(FAM_FILE)
// close() is among the busiest syscalls and few fds are tracked: a look-up
// (lock-free) before each delete (which takes the bucket lock)
static __always_inline int fd_closed(s32 fd)
{
    u64 k = tgid_fd(fd);
#ifdef FAM_DNS
    if (dns_fds.lookup(&k))
        dns_fds.delete(&k);
#endif
#ifdef FAM_FILE
    if (write_fds.lookup(&k))
        write_fds.delete(&k);
    if (dir_fds.lookup(&k))
        dir_fds.delete(&k);
#endif
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close) { return fd_closed(args->fd); }
#endif

#ifdef FAM_FILE
// A duplicate is the same file: dup, dup2, dup3 and fcntl(F_DUPFD*) copy the
// entry (fts, behind rm -r, find and chmod -R, dups each directory it opens).
#define F_DUPFD_ 0
#define F_DUPFD_CLOEXEC_ 1030
BPF_HASH(dup_inflight, u32, s32, 1024);

static __always_inline int dup_enter(s32 oldfd, s32 newfd)
{
    if (newfd >= 0 && newfd != oldfd)
        fd_closed(newfd);   // dup2/dup3 close newfd first
    u64 k = tgid_fd(oldfd);
    if (!dir_fds.lookup(&k) && !write_fds.lookup(&k))
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    dup_inflight.update(&tid, &oldfd);
    return 0;
}

static __always_inline int dup_exit(long ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    s32 *oldfd = dup_inflight.lookup(&tid);
    if (!oldfd)
        return 0;
    s32 from = *oldfd;
    dup_inflight.delete(&tid);
    if (ret < 0 || ret == from)
        return 0;
    u64 k = tgid_fd(from);
    u64 nk = tgid_fd(ret);
    struct dir_ent *d = dir_fds.lookup(&k);
    if (d)
        dir_fds.update(&nk, d);
    u64 *w = write_fds.lookup(&k);
    if (w)
        write_fds.update(&nk, w);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_dup) { return dup_enter(args->fildes, -1); }
TRACEPOINT_PROBE(syscalls, sys_enter_dup2) { return dup_enter(args->oldfd, args->newfd); }
TRACEPOINT_PROBE(syscalls, sys_enter_dup3) { return dup_enter(args->oldfd, args->newfd); }
TRACEPOINT_PROBE(syscalls, sys_enter_fcntl)
{
    u32 cmd = args->cmd;
    if (cmd != F_DUPFD_ && cmd != F_DUPFD_CLOEXEC_)
        return 0;
    return dup_enter(args->fd, -1);
}
TRACEPOINT_PROBE(syscalls, sys_exit_dup) { return dup_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_dup2) { return dup_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_dup3) { return dup_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_fcntl) { return dup_exit(args->ret); }
#endif

// ------------------------------------------------------------------ file --
#ifdef FAM_FILE
BPF_RINGBUF_OUTPUT(rb_file, RB_PAGES_FILE);

#define OP_OPEN 1
#define OP_UNLINK 2
#define OP_RMDIR 3
#define OP_RENAME 4
#define OP_MKDIR 5
#define OP_CHMOD 6
#define OP_CHOWN 7
#define OP_LINK 8
#define OP_SYMLINK 9

#define O_WRONLY_ 01
#define O_RDWR_ 02
#define O_CREAT_ 0100
#define O_TRUNC_ 01000
#define O_DIRECTORY_ 0200000
#define O_PATH_ 010000000

// file xflags (records.py XF_FILE_*)
#define XF_FD_WRITTEN 1   // path1 is empty and dfd is a file this process opened for writing

// 88 bytes before path1: "<HHiiIIIQ" after the header in records.py
struct file_rec {
    struct hdr h;
    u16 op;
    u16 pad;
    s32 dfd;         // directory fd path1 is relative to (AT_FDCWD = -100); fd for fchmod/fchown
    s32 dfd2;        // same for path2
    u32 flags;       // open flags, unlinkat/renameat2 flags
    u32 mode;        // open/chmod/mkdir mode, chown uid
    u32 arg;         // chown gid
    u64 start_ns;    // bpf_ktime_get_boot_ns() at the syscall's entry (h.ts is its exit)
    char path1[PATH_SIZE];
    char path2[PATH_SIZE];
};
BPF_PERCPU_ARRAY(file_heap, struct file_rec, 1);
BPF_HASH(file_inflight, u32, struct file_rec, 2048);

static __always_inline struct file_rec *file_begin(u16 op, s32 dfd, const char *p1)
{
    if (is_ignored())
        return 0;
    u32 zero = 0;
    struct file_rec *r = file_heap.lookup(&zero);
    if (!r)
        return 0;
    r->op = op;
    r->dfd = dfd;
    r->dfd2 = -100;
    r->flags = 0;
    r->mode = 0;
    r->arg = 0;
    r->path1[0] = 0;
    r->path2[0] = 0;
    r->start_ns = bpf_ktime_get_boot_ns();
    if (p1 && bpf_probe_read_user_str(r->path1, PATH_SIZE, p1) < 0)
        return 0;
    return r;
}

// Device nodes written all the time (/dev/null, ttys, the std streams), not
// files: dropped here, before they cost a record.  Everything else under
// /dev (tmpfs: /dev/shm, /dev/mqueue...) is reported; the decoder drops the
// remaining device nodes by their file type.
#define DEV_IS(lit) dev_name_is(name, lit, sizeof(lit) - 1)
static __always_inline int dev_name_is(const char *name, const char *lit, int n)
{
#pragma unroll
    for (int i = 0; i < 8; i++) {
        if (i >= n)
            return 1;
        if (name[i] != lit[i])
            return 0;
    }
    return 1;
}

static __always_inline int noisy_device(const char *p)
{
    if (p[0] != '/' || p[1] != 'd' || p[2] != 'e' || p[3] != 'v' || p[4] != '/')
        return 0;
    const char *name = p + 5;
    // prefixes: tty covers tty, ttyS0, ttyUSB0...; pts/ and fd/ whole directories
    return DEV_IS("null") || DEV_IS("zero") || DEV_IS("full") || DEV_IS("random") ||
           DEV_IS("urandom") || DEV_IS("tty") || DEV_IS("pts/") || DEV_IS("ptmx") ||
           DEV_IS("console") || DEV_IS("stdout") || DEV_IS("stderr") || DEV_IS("stdin") ||
           DEV_IS("fd/") || DEV_IS("kmsg");
}

static __always_inline int file_commit(struct file_rec *r)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    file_inflight.update(&tid, r);
    return 0;
}

// A directory (or O_PATH) open in flight: half a file_rec, as opendir() is common.
struct dir_open {
    s32 dfd;
    u32 pad;
    char path[PATH_SIZE];
};
BPF_PERCPU_ARRAY(dir_open_heap, struct dir_open, 1);
BPF_HASH(dir_inflight, u32, struct dir_open, 1024);

static __always_inline int dir_open_enter(s32 dfd, const char *path)
{
    if (is_ignored())
        return 0;
    u32 zero = 0;
    struct dir_open *o = dir_open_heap.lookup(&zero);
    if (!o)
        return 0;
    o->dfd = dfd;
    if (bpf_probe_read_user_str(o->path, PATH_SIZE, path) <= 1)
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    dir_inflight.update(&tid, o);
    return 0;
}

// The descriptor the open returned is remembered, to resolve later *at() paths against.
static __always_inline int dir_open_exit(struct dir_open *o, long fd)
{
    if (fd < 0)
        return 0;
    join_dirfd(&o->dfd, o->path);
    if (o->dfd != -100)
        return 0;   // relative to a directory fd the sensor does not know: not remembered
    u32 zero = 0;
    struct dir_ent *e = dir_heap.lookup(&zero);
    if (!e)
        return 0;
    long n = bpf_probe_read_kernel_str(e->path, PATH_SIZE, o->path);
    if (n <= 1)
        return 0;
    e->len = n - 1;
    e->epoch = current_epoch();
    u64 k = tgid_fd(fd);
    dir_fds.update(&k, e);
    return 0;
}

static __always_inline int file_open(s32 dfd, const char *path, u32 flags, u32 mode)
{
    // read-only opens are most of all opens and not reported: decide before reading the path
    if (!(flags & (O_WRONLY_ | O_RDWR_ | O_CREAT_ | O_TRUNC_))) {
        // but a directory or O_PATH descriptor is remembered, for the *at() calls made with it
        if (flags & (O_DIRECTORY_ | O_PATH_))
            dir_open_enter(dfd, path);
        return 0;
    }
    struct file_rec *r = file_begin(OP_OPEN, dfd, path);
    if (!r)
        return 0;
    if (noisy_device(r->path1))
        return 0;
    r->flags = flags;
    r->mode = mode;
    return file_commit(r);
}

TRACEPOINT_PROBE(syscalls, sys_enter_open) { return file_open(-100, args->filename, args->flags, args->mode); }
TRACEPOINT_PROBE(syscalls, sys_enter_openat) { return file_open(args->dfd, args->filename, args->flags, args->mode); }
TRACEPOINT_PROBE(syscalls, sys_enter_creat) { return file_open(-100, args->pathname, O_CREAT_ | O_WRONLY_ | O_TRUNC_, args->mode); }
TRACEPOINT_PROBE(syscalls, sys_enter_openat2)
{
    u64 how[2] = {};   // struct open_how { u64 flags; u64 mode; ... }
    bpf_probe_read_user(how, sizeof(how), args->how);
    return file_open(args->dfd, args->filename, (u32)how[0], (u32)how[1]);
}

static __always_inline int file_one(u16 op, s32 dfd, const char *p, u32 flags, u32 mode, u32 arg)
{
    struct file_rec *r = file_begin(op, dfd, p);
    if (!r)
        return 0;
    r->flags = flags;
    r->mode = mode;
    r->arg = arg;
    return file_commit(r);
}

static __always_inline int file_two(u16 op, s32 dfd, const char *p1, s32 dfd2, const char *p2, u32 flags)
{
    struct file_rec *r = file_begin(op, dfd, p1);
    if (!r)
        return 0;
    r->dfd2 = dfd2;
    r->flags = flags;
    if (bpf_probe_read_user_str(r->path2, PATH_SIZE, p2) < 0)
        return 0;
    return file_commit(r);
}

TRACEPOINT_PROBE(syscalls, sys_enter_unlink) { return file_one(OP_UNLINK, -100, args->pathname, 0, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_unlinkat) { return file_one(OP_UNLINK, args->dfd, args->pathname, args->flag, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_rmdir) { return file_one(OP_RMDIR, -100, args->pathname, 0, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_mkdir) { return file_one(OP_MKDIR, -100, args->pathname, 0, args->mode, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_mkdirat) { return file_one(OP_MKDIR, args->dfd, args->pathname, 0, args->mode, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_chmod) { return file_one(OP_CHMOD, -100, args->filename, 0, args->mode, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_fchmod) { return file_one(OP_CHMOD, args->fd, 0, 0, args->mode, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat) { return file_one(OP_CHMOD, args->dfd, args->filename, 0, args->mode, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat2) { return file_one(OP_CHMOD, args->dfd, args->filename, args->flags, args->mode, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_chown) { return file_one(OP_CHOWN, -100, args->filename, 0, args->user, args->group); }
TRACEPOINT_PROBE(syscalls, sys_enter_lchown) { return file_one(OP_CHOWN, -100, args->filename, 0, args->user, args->group); }
TRACEPOINT_PROBE(syscalls, sys_enter_fchown) { return file_one(OP_CHOWN, args->fd, 0, 0, args->user, args->group); }
TRACEPOINT_PROBE(syscalls, sys_enter_fchownat) { return file_one(OP_CHOWN, args->dfd, args->filename, args->flag, args->user, args->group); }
TRACEPOINT_PROBE(syscalls, sys_enter_rename) { return file_two(OP_RENAME, -100, args->oldname, -100, args->newname, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_renameat) { return file_two(OP_RENAME, args->olddfd, args->oldname, args->newdfd, args->newname, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_renameat2) { return file_two(OP_RENAME, args->olddfd, args->oldname, args->newdfd, args->newname, args->flags); }
TRACEPOINT_PROBE(syscalls, sys_enter_link) { return file_two(OP_LINK, -100, args->oldname, -100, args->newname, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_linkat) { return file_two(OP_LINK, args->olddfd, args->oldname, args->newdfd, args->newname, args->flags); }
// symlink: path1 is the link's content (kept verbatim), path2 the new name
TRACEPOINT_PROBE(syscalls, sys_enter_symlink) { return file_two(OP_SYMLINK, -100, args->oldname, -100, args->newname, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_symlinkat) { return file_two(OP_SYMLINK, -100, args->oldname, args->newdfd, args->newname, 0); }

// Report only what happened: the syscall's result decides.
static __always_inline int file_exit(long ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct file_rec *r = file_inflight.lookup(&tid);
    if (!r)
        return 0;
    if (ret >= 0) {
        fill_hdr(&r->h, EV_FILE);
        r->h.aux = ret;
        if (r->path1[0] == 0 && r->dfd >= 0) {
            // fd-based: a file this process opened for writing, or a directory/O_PATH fd
            u64 k = tgid_fd(r->dfd);
            u64 *epoch = write_fds.lookup(&k);
            if (epoch && *epoch == current_epoch())
                r->h.xflags = XF_FD_WRITTEN;
            else
                join_dirfd(&r->dfd, r->path1);
        } else if (r->op != OP_SYMLINK) {
            join_dirfd(&r->dfd, r->path1);   // a symlink's path1 is its content
        }
        if (r->path2[0])
            join_dirfd(&r->dfd2, r->path2);
        if (r->op == OP_OPEN) {
            // ret is the new fd: remember it until it is closed
            u64 k = tgid_fd(ret);
            u64 epoch = current_epoch();
            write_fds.update(&k, &epoch);
        }
        u32 size = sizeof(struct file_rec);
        if (r->path2[0] == 0)
            size = offsetof(struct file_rec, path2);
        if (rb_file.ringbuf_output(r, size, WAKE_FLAGS))
            count_lost(FAMILY_FILE);
    }
    file_inflight.delete(&tid);
    return 0;
}

// the exit of an open: a reported one, or a directory being remembered
static __always_inline int open_exit(long ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct dir_open *o = dir_inflight.lookup(&tid);
    if (o) {
        dir_open_exit(o, ret);
        dir_inflight.delete(&tid);
        return 0;
    }
    return file_exit(ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_open) { return open_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_openat) { return open_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_openat2) { return open_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_creat) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_unlink) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_unlinkat) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_rmdir) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_mkdir) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_mkdirat) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_chmod) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchmod) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchmodat) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchmodat2) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_chown) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_lchown) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchown) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchownat) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_rename) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_renameat) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_renameat2) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_link) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_linkat) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_symlink) { return file_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_symlinkat) { return file_exit(args->ret); }
#endif // FAM_FILE
