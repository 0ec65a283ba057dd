/* Target of the negative scenarios (and of stacking).  PATCH selects the
 * patch variant:
 *   1  replaces scen_main and scen_spare (the good patch)
 *   2  replaces scen_main with another value (stacked on 1)
 *   3  references a symbol no object of the process defines
 *   4  replaces scen_tiny, too short for a jump
 *   5  replaces scen_parked, where a thread stays until released
 * NEG_OTHER_BUILD gives a binary with another build-id. */
//@ before: 71
//@ after: 140
//@ after2: 213
#include <time.h>
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
#ifdef NEG_OTHER_BUILD
int g_neg_base = 77;
#else
int g_neg_base = 70;
#endif
int g_neg_call_spare;
static volatile int released;

NOINLINE int scen_main(void)
{
    return g_neg_base + 1;
}

/* Never called while the test runs: its entry bytes can be changed safely. */
NOINLINE int scen_spare(int x)
{
    return x * 7 + g_neg_base;
}

NOINLINE void scen_tiny(void)
{
}

NOINLINE int scen_parked(void)
{
    while (!released) {
        struct timespec ts = { 0, 1000000L };
        nanosleep(&ts, NULL);
    }
    return g_neg_base;
}

int scenario_value(void)
{
    if (g_neg_call_spare) {
        scen_tiny();
        return scen_spare(1);
    }
    return scen_main();
}

void scenario_thread(void)
{
    for (;;) {
        scen_parked();
        struct timespec ts = { 0, 5000000L };
        nanosleep(&ts, NULL);
    }
}

void scenario_release(void)
{
    released = 1;
}
#else
extern int g_neg_base;
#if PATCH == 1
int scen_main(void)
{
    return g_neg_base * 2;
}

int scen_spare(int x)
{
    return x * 8 + g_neg_base;
}
#elif PATCH == 2
int scen_main(void)
{
    return g_neg_base * 3 + 3;
}
#elif PATCH == 3
extern int scen_no_such_symbol(void);

int scen_main(void)
{
    return scen_no_such_symbol() + g_neg_base;
}
#elif PATCH == 4
void scen_tiny(void)
{
    g_neg_base++;
}
#elif PATCH == 5
int scen_parked(void)
{
    return g_neg_base + 5;
}
#endif
#endif
