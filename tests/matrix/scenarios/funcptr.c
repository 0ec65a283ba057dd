/* A function pointer stored before the patch lands in the new code. */
//@ before: 61
//@ after: 180
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
int g_fp_base = 60;

NOINLINE int scen_fp_target(void)
{
    return g_fp_base + 1;
}

int (*volatile g_fp)(void) = scen_fp_target;

int scenario_value(void)
{
    return g_fp();
}
#else
extern int g_fp_base;

int scen_fp_target(void)
{
    return g_fp_base * 3;
}
#endif
