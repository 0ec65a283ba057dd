"""C sources for the benchmarks: a target whose threads record how long they were frozen, and its patch.

The target maps a shared stats file (MAP_SHARED) that the benchmark reads and
resets from outside, without touching the process through a debugger:

* header (64 bytes): magic, ``generation`` (bumping it resets every thread's
  maximum), ``micro_req`` / ``micro_done`` (run the call microbenchmark),
  then the microbenchmark results in nanoseconds per call (x1000);
* one 64-byte slot per thread: generation seen, largest gap between two
  consecutive clock reads (ns), that gap's start and end (CLOCK_MONOTONIC,
  the clock Python's time.monotonic reads), iterations.

Every thread loops: read the clock, update its maximum gap, call one of the
replaceable functions through a table (no direct callers: the generator's
-fipa-ra check has nothing to flag), sleep ``sleep_us``.  The main thread
serves the microbenchmark: N calls of ``f_0`` through the table (unpatched
or through the jump), and N calls straight to the jump's destination (the
new code without the jump), so that the jump's own cost is the difference.
"""

MAGIC = 0x4E5342454E4348  # "NSBENCH"
HEADER = 64
SLOT = 64
MICRO_CALLS = 2_000_000


def target_source(nfuncs, nthreads, sleep_us=200, filler=0):
    """The target program: ``nfuncs`` replaceable functions, ``nthreads`` recording threads
    (the main thread included), ``filler`` extra functions (size of the program only)."""
    out = ["""#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct header { uint64_t magic, generation, micro_req, micro_done, unpatched_ps, patched_ps, direct_ps, pad; };
struct slot { uint64_t gen, max_gap, gap_start, gap_end, iters, pad[3]; };
static struct header *hdr;
static struct slot *slots;
static int nthreads;
static long sleep_ns;
"""]
    for i in range(nfuncs):
        out.append("__attribute__((noinline)) long f_%d(long x)\n"
                   "{ long y = x * %d + %d; if (y & 1) y ^= x >> 3; return y + %d; }\n" % (i, i + 3, i * 7 + 1, i))
    for i in range(filler):
        out.append("__attribute__((noinline)) long g_%d(long x) { return x * %d + (x >> %d); }\n"
                   % (i, i + 5, i % 13 + 1))
    out.append("long (*volatile table[])(long) = {%s};\n" % ", ".join("f_%d" % i for i in range(nfuncs)))
    if filler:
        out.append("long (*volatile fill_table[])(long) = {%s};\n" % ", ".join("g_%d" % i for i in range(filler)))
    out.append("#define NFUNCS %d\n#define MICRO_CALLS %d\n#define MAGIC 0x%xULL\n" % (nfuncs, MICRO_CALLS, MAGIC))
    out.append(r"""
static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static long run_micro(long (*fn)(long))
{
    long acc = 1;
    for (long i = 0; i < MICRO_CALLS; i++)
        acc = fn(acc + i);
    return acc;
}

static uint64_t time_calls(long (*fn)(long), volatile long *sink)
{
    uint64_t best = ~0ull;
    for (int r = 0; r < 5; r++) {
        uint64_t t0 = now_ns();
        *sink += run_micro(fn);
        uint64_t t = now_ns() - t0;
        if (t < best) best = t;
    }
    return best * 1000 / MICRO_CALLS;   /* picoseconds per call */
}

/* Where f_0 really runs: the destination of a jump at its entry, or f_0 itself. */
static long (*jump_destination(void))(long)
{
    unsigned char *p = (unsigned char *)table[0];
    if (p[0] == 0xf3 && p[1] == 0x0f && p[2] == 0x1e && p[3] == 0xfa) p += 4;
    if (p[0] == 0xe9) { int32_t rel; memcpy(&rel, p + 1, 4); return (long (*)(long))(p + 5 + rel); }
    if (p[0] == 0xff && p[1] == 0x25) { uint64_t a; memcpy(&a, p + 6, 8); return (long (*)(long))a; }
    return table[0];
}

static void micro(void)
{
    volatile long sink = 0;
    long (*dest)(long) = jump_destination();
    uint64_t through = time_calls(table[0], &sink);
    if (dest == table[0]) hdr->unpatched_ps = through; else hdr->patched_ps = through;
    hdr->direct_ps = time_calls(dest, &sink);
}

static void loop(int idx)
{
    struct slot *s = &slots[idx];
    /* ~0: the first iteration acknowledges whatever generation it finds (a reset written before this
       thread got here would otherwise never be acknowledged: seen under load, reset waited forever) */
    uint64_t gen = ~0ull, last = now_ns();
    long acc = idx;
    struct timespec ts = {0, sleep_ns};
    for (unsigned long i = 0;; i++) {
        uint64_t t = now_ns();
        if (hdr->generation != gen) {
            gen = hdr->generation;
            s->max_gap = 0;
            last = t;
            __atomic_store_n(&s->gen, gen, __ATOMIC_RELEASE);
        }
        uint64_t gap = t - last;
        if (gap > s->max_gap) { s->gap_start = last; s->gap_end = t; s->max_gap = gap; }
        last = t;
        acc += table[(i + idx) % NFUNCS](acc);
        s->iters++;
        if (idx == 0 && hdr->micro_req != hdr->micro_done) {
            micro();
            __atomic_store_n(&hdr->micro_done, hdr->micro_req, __ATOMIC_RELEASE);
            last = now_ns();
            continue;
        }
        if (sleep_ns) nanosleep(&ts, NULL);
    }
}

static void *thread_main(void *arg) { loop((int)(long)arg); return NULL; }

int main(int argc, char **argv)
{
    if (argc < 4) { fprintf(stderr, "usage: %s STATS NTHREADS SLEEP_US\n", argv[0]); return 2; }
    nthreads = atoi(argv[2]);
    sleep_ns = atol(argv[3]) * 1000;
    size_t size = 64 + 64 * (size_t)nthreads;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0 || ftruncate(fd, size) != 0) { perror("stats"); return 1; }
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 1; }
    close(fd);
    hdr = m;
    slots = (struct slot *)((char *)m + 64);
    for (int i = 1; i < nthreads; i++) {
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setstacksize(&a, 256 * 1024);
        if (pthread_create(&t, &a, thread_main, (void *)(long)i) != 0) { perror("pthread_create"); return 1; }
    }
""")
    if filler:
        out.append("    for (int i = 0; i < %d; i++) (void)fill_table[i](i);\n" % filler)
    out.append(r"""    __atomic_store_n(&hdr->magic, MAGIC, __ATOMIC_RELEASE);
    loop(0);
    return 0;
}
""")
    return "".join(out)


def patch_source(nfuncs):
    """A live patch replacing f_0 .. f_{nfuncs-1}: same shape, other constants (values change visibly)."""
    out = []
    for i in range(nfuncs):
        out.append("long f_%d(long x)\n{ long y = x * %d + %d; if (y & 1) y ^= x >> 3; return y + %d; }\n"
                   % (i, i + 3, i * 7 + 1, i + 1000000))
    return "".join(out)
