"""The subreaper supervisor of the local executor (executors/local.py), where no cgroup can be
made: a small per-run process (`python -I -S -c SUPERVISOR`) that makes itself the child
subreaper of the command, so orphans are re-parented to it, not to init, and kills every
process below it when the command ends. SIGTERM: it passes SIGTERM on to all below it and
SIGKILLs them after the grace; SIGUSR1: it SIGKILLs them now.

It also ends with the node (its parent), however the node ends: the kernel sends it SIGTERM
when the node's thread that started it is gone (PR_SET_PDEATHSIG; a node's runs are started by
its pool's threads, which live as long as the node).
"""

# argv: GRACE NODE PROGRAM CMD...; NODE: the pid of the process that starts it; PROGRAM: the file
# CMD is exec'd as (found along the shard's PATH by the node), a file the kernel will not exec
# (no #! line: ENOEXEC) run by /bin/sh, as execvp(3) and a shell run it. The command's exit
# status is its own (a signal: it kills itself with it).
SUPERVISOR = r"""
import errno, os, signal, sys, time
me = os.getpid()
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except Exception:
    libc = None
def below():
    kids = {}
    for name in os.listdir('/proc'):
        if name.isdigit():
            try:
                with open('/proc/' + name + '/stat', 'rb') as f:
                    s = f.read()
                kids.setdefault(int(s[s.rindex(b')') + 2:].split()[1]), []).append(int(name))
            except (OSError, ValueError, IndexError):
                pass
    found, todo = [], [me]
    while todo:
        for c in kids.get(todo.pop(), ()):
            found.append(c)
            todo.append(c)
    return found
def send(sig):
    for p in below():
        try:
            os.kill(p, sig)
        except OSError:
            pass
def on_term(*_):
    send(signal.SIGTERM)
    signal.alarm(max(1, int(float(sys.argv[1]) + 0.999)))
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGUSR1, lambda *_: send(signal.SIGKILL))
signal.signal(signal.SIGALRM, lambda *_: send(signal.SIGKILL))
if libc is not None:
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: the node's end is a SIGTERM here
if os.getppid() != int(sys.argv[2]):  # the node ended before that: run nothing
    os._exit(143)
program, cmd = sys.argv[3], sys.argv[4:]
child = os.fork()
if child == 0:
    for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGALRM, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
        signal.signal(s, signal.SIG_DFL)
    try:
        try:
            os.execv(program, cmd)
        except OSError as e:
            if e.errno != errno.ENOEXEC:
                raise
            os.execv('/bin/sh', ['/bin/sh', program] + cmd[1:])
    except OSError as e:
        os.write(2, ('bflow: cannot start %s: %s\n' % (cmd[0], e.strerror)).encode())
        os._exit(127 if isinstance(e, FileNotFoundError) else 126)
status = None
while status is None:
    try:
        pid, st = os.wait()
    except ChildProcessError:
        break
    if pid == child:
        status = st
while True:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid == 0:
        send(signal.SIGKILL)
        time.sleep(0.01)
if status is None or os.WIFEXITED(status):
    os._exit(os.WEXITSTATUS(status) if status is not None else 1)
sig = os.WTERMSIG(status)
signal.signal(sig, signal.SIG_DFL)
os.kill(me, sig)
os._exit(128 + sig)
"""
