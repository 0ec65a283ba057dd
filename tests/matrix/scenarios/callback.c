/* The patch calls back into an unpatched target function. */
//@ before: 31
//@ after: 80
//@ refuse ipa_ra O0 pie,nopie,static: scenario_value; -fipa-stack-alignment
//@ refuse ipa_ra O2 pie,nopie,static: scenario_value; -fipa-modref -fipa-pure-const -fipa-ra -fipa-reference -fipa-stack-alignment
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
