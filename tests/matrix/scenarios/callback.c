/* The patch calls back into an unpatched target function. */
//@ before: 31
//@ after: 80
//@ ipa_ra: scenario_value
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
int g_cb_seed = 10;

NOINLINE int scen_cb_base(int x)
{
    return x * 3;
}

NOINLINE int scen_cb(void)
{
    return scen_cb_base(g_cb_seed) + 1;
}

int scenario_value(void)
{
    return scen_cb();
}
#else
extern int g_cb_seed;
extern int scen_cb_base(int x);

int scen_cb(void)
{
    return scen_cb_base(g_cb_seed) + 50;
}
#endif
