/* Old code still running in another thread when the patch comes: a thread is
 * practically always inside the replaced function (40 ms spins back to back),
 * so apply must wait until it has left (run-out: a breakpoint at the return
 * address).  The new code sleeps 20 ms inside, so revert must wait too. */
//@ before: 501
//@ after: 1000
//@ busy: yes
//@ strategy: run-out
//@ refuse ipa_ra O2 pie,nopie,static: scenario_busy_value, scenario_value; -fipa-modref -fipa-pure-const -fipa-reference
#include <time.h>
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
int g_busy_base = 500;

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

NOINLINE int scen_busy(int spin_ms)
{
    long end = now_ns() + spin_ms * 1000000L;
    while (now_ns() < end)
        ;
    return g_busy_base + 1;
}

int scenario_value(void)
{
    return scen_busy(0);
}

int scenario_busy_value(void)
{
    return scen_busy(40);
}
#else
extern int g_busy_base;

int scen_busy(int spin_ms)
{
    struct timespec ts = { 0, spin_ms * 500000L };
    if (spin_ms)
        nanosleep(&ts, NULL);
    return g_busy_base * 2;
}
#endif
