/* Old code still running in another thread when the patch comes: a thread
 * spends half its time inside the replaced function (20 ms spins), so apply
 * and revert must wait for a moment when it is outside. */
//@ before: 501
//@ after: 1000
//@ ipa_ra: scenario_busy_value, scenario_value
//@ busy: yes
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
    int v = scen_busy(20);
    struct timespec ts = { 0, 20000000L };
    nanosleep(&ts, NULL);
    return v;
}
#else
extern int g_busy_base;

int scen_busy(int spin_ms)
{
    (void)spin_ms;
    return g_busy_base * 2;
}
#endif
