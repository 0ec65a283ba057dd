"""A multi-threaded C target for the process-layer tests.

Threads: main (line commands on stdin), a reader blocked in read() on a FIFO
given as argv[1], two spinning workers, and optionally (argv[2] == "storm")
a thread that sends SIGUSR1 to every thread in turn, each only after the
previous one was handled (so no signal is ever merged with a pending one and
the handler count must equal the number sent).  argv[2] == "seccomp" installs
an allow-everything seccomp filter first.

Signals from outside (kill, SI_USER) are counted apart from the storm's (tgkill).
Commands: "tids" -> "tids MAIN READER W1 W2 [STORM]"; "count" -> "sent S handled H ext E";
"stop" -> stops the storm, "stopped S H E"; "got?" -> "got N LAST" (reads so far);
"ping" -> "pong".
"""

import os

import cbuild

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

static volatile long handled, ext_handled, sent, reads, storm_on = 1;
static char last[64] = "-";
static pid_t tids[5];
static int ntids;
static const char *fifo;

/* The storm's signals (tgkill: SI_TKILL) and signals from outside (kill: SI_USER) are counted apart. */
static void on_usr1(int s, siginfo_t *si, void *uc) {
    (void)s; (void)uc;
    if (si->si_code == SI_TKILL) __atomic_add_fetch(&handled, 1, __ATOMIC_SEQ_CST);
    else __atomic_add_fetch(&ext_handled, 1, __ATOMIC_SEQ_CST);
}

static void *reader(void *a) {
    (void)a;
    tids[1] = gettid();
    int fd = open(fifo, O_RDWR);
    if (fd < 0) { perror("open fifo"); exit(2); }
    for (;;) {
        char buf[64];
        ssize_t n = read(fd, buf, sizeof buf - 1);
        if (n < 0) { printf("read-error %d\n", errno); fflush(stdout); exit(3); }
        if (n == 0) continue;
        buf[n] = 0;
        if (buf[n - 1] == '\n') buf[n - 1] = 0;
        snprintf(last, sizeof last, "%s", buf);
        __atomic_add_fetch(&reads, 1, __ATOMIC_SEQ_CST);
    }
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
    pthread_create(&t, 0, reader, 0);
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
    return cbuild.build([("proctarget.c", SOURCE)], ["-O2", "-g", "-pthread"], "proctarget")


class FifoTarget:
    """Start the target with a fresh FIFO; ``write_fifo`` feeds its blocked reader."""

    def __init__(self, tmp_path, mode=""):
        from gdbharness import Target
        self.fifo = str(tmp_path / "fifo")
        os.mkfifo(self.fifo)
        argv = [build(), self.fifo] + ([mode] if mode else [])
        self.target = Target(argv, ready_line="ready")

    def __enter__(self):
        self.target.__enter__()
        return self

    def __exit__(self, *exc):
        return self.target.__exit__(*exc)

    @property
    def pid(self):
        return self.target.pid

    def tids(self):
        return [int(x) for x in self.target.ask("tids").split()[1:]]

    def write_fifo(self, text):
        fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
