/* The bare-ptrace floor of a live patch (issue 15): what stopping every thread of a process,
 * rewriting 8 bytes of its code and letting it go costs with nothing else around it.
 *
 *     bare_floor PID ADDR
 *
 * PTRACE_SEIZE + PTRACE_INTERRUPT every thread of /proc/PID/task (again until no new thread
 * shows up), wait for each to stop, read the 8 bytes at ADDR and write them back unchanged
 * (PTRACE_POKETEXT, as a jump write would), detach every thread.  Exits 0, or 1 with a line on
 * stderr.  Built by bench/run.py; no GDB, no symbols, no unwinding: any tool pays at least this.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/wait.h>

#define MAX_THREADS 4096

static pid_t tids[MAX_THREADS];
static int ntids;

static int known(pid_t tid)
{
    for (int i = 0; i < ntids; i++)
        if (tids[i] == tid)
            return 1;
    return 0;
}

/* Seize and interrupt every thread not seized yet; the number newly seized (-1 on error). */
static int seize_new(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) {
        perror(path);
        return -1;
    }
    int added = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        pid_t tid = (pid_t)atoi(e->d_name);
        if (tid <= 0 || known(tid))
            continue;
        if (ntids == MAX_THREADS) {
            fprintf(stderr, "more than %d threads\n", MAX_THREADS);
            closedir(d);
            return -1;
        }
        if (ptrace(PTRACE_SEIZE, tid, 0, 0) != 0) {
            if (errno == ESRCH)
                continue; /* the thread exited meanwhile */
            fprintf(stderr, "PTRACE_SEIZE %d: %s\n", tid, strerror(errno));
            closedir(d);
            return -1;
        }
        tids[ntids++] = tid;
        if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0) {
            fprintf(stderr, "PTRACE_INTERRUPT %d: %s\n", tid, strerror(errno));
            closedir(d);
            return -1;
        }
        added++;
    }
    closedir(d);
    return added;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PID ADDR\n", argv[0]);
        return 2;
    }
    pid_t pid = (pid_t)atoi(argv[1]);
    unsigned long addr = strtoul(argv[2], NULL, 0);
    int first = 0, n;
    while ((n = seize_new(pid)) > 0) {
        for (int i = first; i < ntids; i++) {
            int status;
            if (waitpid(tids[i], &status, __WALL) < 0) {
                fprintf(stderr, "waitpid %d: %s\n", tids[i], strerror(errno));
                return 1;
            }
        }
        first = ntids;
    }
    if (n < 0 || ntids == 0)
        return 1;
    errno = 0;
    long word = ptrace(PTRACE_PEEKTEXT, pid, (void *)addr, 0);
    if (errno != 0) {
        fprintf(stderr, "PTRACE_PEEKTEXT %#lx: %s\n", addr, strerror(errno));
        return 1;
    }
    if (ptrace(PTRACE_POKETEXT, pid, (void *)addr, (void *)word) != 0) {
        fprintf(stderr, "PTRACE_POKETEXT %#lx: %s\n", addr, strerror(errno));
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < ntids; i++)
        if (ptrace(PTRACE_DETACH, tids[i], 0, 0) != 0) {
            fprintf(stderr, "PTRACE_DETACH %d: %s\n", tids[i], strerror(errno));
            rc = 1;
        }
    return rc;
}
