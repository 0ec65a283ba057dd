"""`check`, `list` and `patch --dry-run` are passive, seen from outside; apply under MDWE (issue 14, item 2).

Passive: no injected system call, no write, no breakpoint left.  The target
has NO seccomp filter (the only case in which an older check injected a
prctl) and turns on Syscall User Dispatch: a system call made from anywhere
but its own one `syscall` instruction raises SIGSYS, which its handler
counts.  An injected call (its stub at a thread's pc) is exactly such a
call.  After each command the count is 0 and every mapping's bytes are
those it had before.

MDWE (PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN): the process may never give a
mapping PROT_EXEC it did not have.  Apply maps the patch with its final
maximum protections and only takes them away, so it works there.
"""

import hashlib
import os

import pytest

import targets as T
from targets import Target, nsb

pytestmark = pytest.mark.gdb

TARGET_C = r'''
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#define SET_SYSCALL_USER_DISPATCH 59
#define SYS_DISPATCH_ON 1
#define SET_MDWE 65
#define MDWE_REFUSE_EXEC_GAIN 1

int base_value = 1;
volatile char selector;          /* 0: every call allowed, 1: SIGSYS outside our instruction */
volatile long sigsys_count;

__attribute__((noinline)) int compute(int x) { return base_value + x; }

/* The one system call instruction allowed: the kernel compares its pc after the instruction. */
long raw_syscall(long nr, long a, long b, long c);
__asm__(".text\n.globl raw_syscall\n.type raw_syscall,@function\nraw_syscall:\n"
        "  mov %rdi, %rax\n  mov %rsi, %rdi\n  mov %rdx, %rsi\n  mov %rcx, %rdx\n"
        "  syscall\n.globl raw_syscall_end\nraw_syscall_end:\n  ret\n");
extern char raw_syscall_end[];

static void on_sigsys(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)si; (void)uc;
    sigsys_count++;
    selector = 0;                /* let the handler's own sigreturn through */
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "sud")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigsys;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSYS, &sa, NULL);
        if (prctl(SET_SYSCALL_USER_DISPATCH, SYS_DISPATCH_ON, (unsigned long)raw_syscall_end, 1, &selector)) {
            printf("unsupported syscall user dispatch: %s\n", strerror(errno));
            return 1;
        }
        printf("ready %lx %lx\n", (unsigned long)&sigsys_count, (unsigned long)&selector);
        fflush(stdout);
        selector = 1;
        for (;;)
            raw_syscall(34, 0, 0, 0);   /* pause() */
    }
    if (argc > 1 && !strcmp(argv[1], "mdwe") && prctl(SET_MDWE, MDWE_REFUSE_EXEC_GAIN, 0, 0, 0)) {
        printf("unsupported PR_SET_MDWE: %s\n", strerror(errno));
        return 1;
    }
    printf("ready %d\n", compute(1));
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        unsigned long lo, len;
        if (sscanf(line, "unmap %lx %lx", &lo, &len) == 2)
            printf("unmapped %d\n", munmap((void *)lo, len));   /* the program drops memory itself */
        else
            printf("value %d\n", compute(1));
        fflush(stdout);
    }
    return 0;
}
'''

PATCH_C = "extern int base_value;\nint compute(int x) { return base_value + x + 100; }\n"


def _target():
    return T.build([("passive.c", TARGET_C)], ["-O2", "-flive-patching=inline-clone", "-g", "-fPIE", "-pie"],
                        "passive-target")


def _patch(tmp_path):
    return T.bind_patch(_target(), [("passive_patch.c", PATCH_C)], "passive-patch.so", workdir=tmp_path)


def _start(mode):
    # Without rseq: the kernel itself rewrites a thread's rseq cpu_id (in its TCB) whenever it migrates,
    # which would read as a changed mapping.
    env = dict(os.environ, GLIBC_TUNABLES="glibc.pthread.rseq=0")
    t = Target([_target(), mode], timeout=20, env=env)
    t.__enter__()
    line = t.readline(20)
    if line.startswith("unsupported"):
        t.__exit__(None, None, None)
        pytest.skip("kernel %s: %s" % (os.uname().release, line))
    assert line.startswith("ready"), line
    return t, line.split()[1:]


def _contents(pid):
    """{mapping line: sha256 of its bytes} for every readable mapping (the kernel's own pages left out)."""
    out = {}
    with open("/proc/%d/maps" % pid) as f:
        lines = f.read().splitlines()
    with open("/proc/%d/mem" % pid, "rb") as mem:
        for line in lines:
            parts = line.split()
            if parts[1][0] != "r" or (len(parts) > 5 and parts[5] in ("[vvar]", "[vvar_vclock]", "[vsyscall]")):
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            mem.seek(lo)
            out[line] = hashlib.sha256(mem.read(hi - lo)).hexdigest()
    return out


def _count(pid, addr):
    return int.from_bytes(T.read_mem(pid, addr, 8), "little")


@pytest.mark.timeout(300)
def test_check_list_and_dry_run_are_passive(tmp_path):
    p = _patch(tmp_path)
    t, (addr, selector) = _start("sud")
    try:
        addr = int(addr, 16)
        # Settled: the selector set to block (after "ready"), the one thread asleep in pause().
        assert T.wait_for(lambda: T.read_mem(t.pid, int(selector, 16), 1) == b"\x01"
                          and T.proc_state(t.pid) == "S", 10)
        with open("/proc/%d/status" % t.pid) as f:
            assert "Seccomp:\t0" in f.read()  # no filter: the case where check used to inject a prctl
        before = _contents(t.pid)
        assert _count(t.pid, addr) == 0
        for argv, want in ((("check", "-f", p), 2), (("list",), 0), (("patch", "-f", p, "--dry-run"), 0)):
            run = nsb(argv[0], "-p", t.pid, *argv[1:], "--json", "--timeout", 90)
            rc, doc, err = run.returncode, run.process, run.stderr
            assert rc == want, (argv, rc, doc.get("message"), err)
            assert T.wait_for(lambda: T.tracer_pid(t.pid) == 0, 5)
            assert T.wait_running(t.pid, 10), T.thread_states(t.pid)
            assert _count(t.pid, addr) == 0, "%s ran a system call in the target (SIGSYS counted)" % argv[0]
            after = _contents(t.pid)
            assert sorted(after) == sorted(before), (argv[0], set(after) ^ set(before))
            changed = [m for m in before if before[m] != after[m]]
            assert not changed, "%s changed the bytes of %s" % (argv[0], changed)
            print("%s: exit %d, 0 SIGSYS, %d mappings unchanged" % (" ".join(argv[:1] + argv[2:3]), rc, len(after)))
        # The check is sharp: an apply injects its mmap, which the target sees.
        run = nsb("patch", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
        rc, doc, err = run.returncode, run.process, run.stderr
        assert T.wait_for(lambda: _count(t.pid, addr) > 0, 5), (rc, doc.get("message"))
    finally:
        t.__exit__(None, None, None)


@pytest.mark.timeout(300)
def test_apply_and_revert_under_mdwe(tmp_path):
    p = _patch(tmp_path)
    t, (value,) = _start("mdwe")
    try:
        assert int(value) == 2
        with open("/proc/%d/status" % t.pid) as f:
            status = f.read()
        run = nsb("patch", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
        rc, doc, err = run.returncode, run.process, run.stderr
        assert rc == 0, (doc.get("message"), err)
        assert t.ask("get") == "value 102"
        wx = [m for m in T.maps(t.pid) if "w" in m.split()[1] and "x" in m.split()[1]]
        assert not wx, wx
        run = nsb("check", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
        rc, doc, err = run.returncode, run.process, run.stderr
        assert rc == 0, doc.get("message")
        run = nsb("revert", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
        rc, doc, err = run.returncode, run.process, run.stderr
        assert rc == 0, (doc.get("message"), err)
        assert t.ask("get") == "value 2"
        run = nsb("patch", "-p", t.pid, "-f", p, "--json", "--timeout", 90)  # a re-apply reuses the mapping
        rc, doc, err = run.returncode, run.process, run.stderr
        assert rc == 0, (doc.get("message"), err)
        assert t.ask("get") == "value 102"
        print("MDWE target (kernel %s): apply, revert, re-apply all exit 0" % os.uname().release)
        assert "Seccomp:\t0" in status
    finally:
        t.__exit__(None, None, None)


@pytest.mark.timeout(300)
def test_reapply_after_the_program_unmapped_the_patch_memory(tmp_path):
    """A patch reverted without --unmap keeps its memory; if the program unmaps that memory itself, a re-apply
    maps it afresh at the recorded place (it used to fail: mprotect ENOMEM).  Only part of it gone: refused."""
    p = _patch(tmp_path)
    t, (value,) = _start("plain")
    try:
        for rnd in ("whole", "part"):
            run = nsb("patch", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
            rc, doc, err = run.returncode, run.process, run.stderr
            assert rc == 0, (rnd, doc.get("message"), err)
            assert t.ask("get") == "value 102"
            run = nsb("revert", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
            rc, doc, err = run.returncode, run.process, run.stderr
            assert rc == 0 and "memory kept" in doc["message"], (doc.get("message"), err)
            run = nsb("list", "-p", t.pid, "--json", "--timeout", 90)
            rc, doc, err = run.returncode, run.process, run.stderr
            lo, hi = doc["patches"][0]["range"]
            if rnd == "whole":
                assert t.ask("unmap %x %x" % (lo, hi - lo)) == "unmapped 0"
                assert not [m for m in T.maps(t.pid) if lo <= int(m.split("-")[0], 16) < hi]
                run = nsb("patch", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
                rc, doc, err = run.returncode, run.process, run.stderr
                assert rc == 0, (doc.get("message"), err)
                assert t.ask("get") == "value 102"
                run = nsb("revert", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
                rc, doc, err = run.returncode, run.process, run.stderr
                assert rc == 0, doc.get("message")
            else:
                assert t.ask("unmap %x %x" % (lo, 4096)) == "unmapped 0"
                run = nsb("patch", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
                rc, doc, err = run.returncode, run.process, run.stderr
                assert rc == 4 and "only partly mapped" in doc["message"] and "--unmap" in doc["message"], \
                    (rc, doc.get("message"), err)
                assert t.ask("get") == "value 2"
                run = nsb("revert", "-p", t.pid, "-f", p, "--unmap", "--json", "--timeout", 90)
                rc, doc, err = run.returncode, run.process, run.stderr
                assert rc == 0, (doc.get("message"), err)
                run = nsb("patch", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
                rc, doc, err = run.returncode, run.process, run.stderr
                assert rc == 0, (doc.get("message"), err)
                assert t.ask("get") == "value 102"
        print("re-apply after the program's munmap: mapped afresh; after a partial munmap: refused, exit 4")
    finally:
        t.__exit__(None, None, None)
