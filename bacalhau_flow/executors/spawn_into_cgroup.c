/* Start a command straight inside its cgroup (executors/spawn.py loads this with ctypes).

   Python 3.11 cannot start a process inside a cgroup: without this, a /bin/sh joins the
   cgroup and then execs the command, two execs a command (~0.6 ms more a shard of `true`).
   Here the child of a vfork() joins the cgroup itself (writes "0" to the cgroup's
   cgroup.procs), takes its descriptors, starts a new session and execs the command: one
   exec, and all it forks is inside from its first instruction.

   The vfork child shares the caller's memory until it execs or exits, and the calling
   thread waits meanwhile: the child makes system calls only (no malloc, no locks). Signals
   are blocked around the vfork, and in the child every handler is set back to the default
   before they are unblocked, so no handler of the parent's (Python's) runs in the child.
   This is what CPython's own _posixsubprocess does when it uses vfork.

   Build: cc -O2 -shared -fPIC -o _spawn_into_cgroup.so spawn_into_cgroup.c (scripts/setup.sh). */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* The step of the child that failed, reported with its errno through a close-on-exec pipe. */
enum { STEP_JOIN = 1, STEP_DESCRIPTORS = 2, STEP_CHDIR = 3, STEP_SESSION = 4, STEP_EXEC = 5 };

static void child_failed(int report, int step) {
    int message[2] = {step, errno};
    ssize_t ignored = write(report, message, sizeof message);
    (void)ignored;
    _exit(127);
}

/* `fd` as descriptor `target` of the child, inherited across exec. */
static int take(int fd, int target) {
    if (fd == target) {
        int flags = fcntl(fd, F_GETFD);
        return flags < 0 ? -1 : fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
    }
    return dup2(fd, target) < 0 ? -1 : 0;
}

static void defaults_for_all_signals(void) {
    struct sigaction action;
    for (int sig = 1; sig < _NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &action) != 0)
            continue;
        /* handled ones (the handler would run in the parent's memory), and the two that
           Python ignores, as Popen's restore_signals has them */
        int handled = action.sa_handler != SIG_DFL && action.sa_handler != SIG_IGN;
        int ignored_by_python = action.sa_handler == SIG_IGN && (sig == SIGPIPE || sig == SIGXFSZ);
        if (!handled && !ignored_by_python)
            continue;
        action.sa_handler = SIG_DFL;
        action.sa_flags = 0;
        sigemptyset(&action.sa_mask);
        sigaction(sig, &action, NULL);
    }
}

/* Start `path` (argv, envp: NULL-ended) in `cwd`, inside the cgroup whose cgroup.procs is
   open as `procs`, with `in`, `out` and `err` as its descriptors 0, 1 and 2, in a session of
   its own. Returns its pid; or -1 with failure = {step, errno} (step 0: in this process,
   before the child existed; the child, if one was made, has been reaped). */
int bflow_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
                int procs, int in, int out, int err, int failure[2]) {
    int report[2];
    sigset_t all, old;
    failure[0] = failure[1] = 0;
    if (pipe2(report, O_CLOEXEC) != 0) {
        failure[1] = errno;
        return -1;
    }
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = vfork();
    if (pid == 0) {
        defaults_for_all_signals();
        if (write(procs, "0", 1) != 1)
            child_failed(report[1], STEP_JOIN);
        if (take(in, 0) || take(out, 1) || take(err, 2))
            child_failed(report[1], STEP_DESCRIPTORS);
        /* every other descriptor closes at the exec (the report pipe too); an old kernel
           without this: Python opens its descriptors close-on-exec already */
        syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
        if (chdir(cwd) != 0)
            child_failed(report[1], STEP_CHDIR);
        if (setsid() < 0)
            child_failed(report[1], STEP_SESSION);
        sigprocmask(SIG_SETMASK, &old, NULL);
        execve(path, argv, envp);
        child_failed(report[1], STEP_EXEC);
    }
    int spawn_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(report[1]);
    if (pid < 0) {
        close(report[0]);
        failure[1] = spawn_errno;
        return -1;
    }
    int message[2];
    ssize_t got;
    do {
        got = read(report[0], message, sizeof message);
    } while (got < 0 && errno == EINTR);
    close(report[0]);
    if (got == (ssize_t)sizeof message) { /* the child failed before its exec, and has exited */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        failure[0] = message[0];
        failure[1] = message[1];
        return -1;
    }
    return pid;
}
