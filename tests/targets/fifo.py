"""A multi-threaded C target for the process-layer tests.

Threads: main (line commands on stdin), a reader blocked in read() on a FIFO
given as argv[1] (the harness's FIFO reader), two spinning workers, and optionally (argv[2] == "storm")
a thread that sends SIGUSR1 to every thread in turn, each only after the
previous one was handled (so no signal is ever merged with a pending one and
the handler count must equal the number sent).  argv[2] == "seccomp" installs
an allow-everything seccomp filter first.

Signals from outside (kill, SI_USER) are counted apart from the storm's (tgkill).
Commands: "tids" -> "tids MAIN READER W1 W2 [STORM]"; "count" -> "sent S handled H ext E";
"stop" -> stops the storm, "stopped S H E"; "got?" -> "got N LAST" (reads so far);
"ping" -> "pong".
"""

from .cbuild import FIFO_READER_C
from .cbuild import build as build_c
from .process import Target, make_fifo, write_fifo

SOURCE = r'''
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile long handled, ext_handled, sent, storm_on = 1;
static pid_t tids[5];
static int ntids;
#define READER_STARTED() (tids[1] = gettid())
''' + FIFO_READER_C + r'''

/* The storm's signals (tgkill: SI_TKILL) and signals from outside (kill: SI_USER) are counted apart. */
static void on_usr1(int s, siginfo_t *si, void *uc) {
    (void)s; (void)uc;
    if (si->si_code == SI_TKILL) __atomic_add_fetch(&handled, 1, __ATOMIC_SEQ_CST);
    else __atomic_add_fetch(&ext_handled, 1, __ATOMIC_SEQ_CST);
}

static void *worker(void *a) {
    tids[(long)a] = gettid();
    for (;;) { for (volatile int i = 0; i < 200000; i++) ; usleep(500); }
}

static void *storm(void *a) {
    (void)a;
    tids[4] = gettid();
    for (int k = 0; storm_on; k++) {
        pid_t to = tids[k % 5];
        __atomic_add_fetch(&sent, 1, __ATOMIC_SEQ_CST);
        syscall(SYS_tgkill, getpid(), to, SIGUSR1);
        while (__atomic_load_n(&handled, __ATOMIC_SEQ_CST) != sent) sched_yield();
    }
    return 0;
}

static void allow_all_seccomp(void) {
    struct sock_filter f[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
    struct sock_fprog prog = { 1, f };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("seccomp"); exit(4);
    }
}

int main(int argc, char **argv) {
    fifo = argv[1];
    const char *mode = argc > 2 ? argv[2] : "";
    if (!strcmp(mode, "seccomp")) allow_all_seccomp();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_RESTART | SA_SIGINFO;
    sigaction(SIGUSR1, &sa, 0);
    tids[0] = gettid();
    pthread_t t;
    pthread_create(&t, 0, reader_loop, 0);
    pthread_create(&t, 0, worker, (void *)2L);
    pthread_create(&t, 0, worker, (void *)3L);
    ntids = 4;
    while (!tids[1] || !tids[2] || !tids[3]) usleep(1000);
    if (!strcmp(mode, "storm")) {
        pthread_create(&t, 0, storm, 0);
        while (!tids[4]) usleep(1000);
        ntids = 5;
    }
    printf("ready\n"); fflush(stdout);
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "tids", 4)) {
            printf("tids");
            for (int i = 0; i < ntids; i++) printf(" %d", tids[i]);
            printf("\n");
        } else if (!strncmp(line, "count", 5)) {
            printf("sent %ld handled %ld ext %ld\n", sent, handled, ext_handled);
        } else if (!strncmp(line, "stop", 4)) {
            storm_on = 0;
            usleep(20000);
            printf("stopped %ld %ld %ld\n", sent, handled, ext_handled);
        } else if (!strncmp(line, "got?", 4)) {
            printf("got %ld %s\n", reads, last);
        } else {
            printf("pong\n");
        }
        fflush(stdout);
    }
    return 0;
}
'''


def build():
    """Path of the compiled target (cached per run)."""
    return build_c([("proctarget.c", SOURCE)], ["-O2", "-g", "-pthread"], "proctarget")


class FifoTarget(Target):
    """The target started with a fresh FIFO; ``write_fifo`` feeds its blocked reader."""

    def __init__(self, tmp_path, mode=""):
        self.fifo = make_fifo(tmp_path, "fifo")
        super().__init__([build(), self.fifo] + ([mode] if mode else []), ready_line="ready")

    def tids(self):
        return [int(x) for x in self.ask("tids").split()[1:]]

    def write_fifo(self, text):
        write_fifo(self.fifo, text)
