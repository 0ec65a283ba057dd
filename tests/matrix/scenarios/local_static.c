/* A function-local static of the target. */
//@ before: 4
//@ after: 303
//@ refuse ipa_ra O0 pie,nopie,static: scenario_value; -fipa-stack-alignment
//@ refuse ipa_ra O2 pie,nopie,static: scenario_value; -fipa-modref -fipa-pure-const -fipa-ra -fipa-reference -fipa-stack-alignment
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
int g_seed = 3;

NOINLINE int scen_local(void)
{
    static int base;
    if (!base)
        base = g_seed;
    return base + 1;
}

int scenario_value(void)
{
    return scen_local();
}
#else
#include "vzp.h"
extern int g_seed;

int scen_local(void)
{
    VZP_STATIC_VAR_REF(int, base);
    if (!base)
        base = g_seed;
    return base * 100 + g_seed;
}
#endif
