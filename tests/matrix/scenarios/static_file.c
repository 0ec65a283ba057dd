/* File-scope static variable and static function of the target. */
//@ before: 141
//@ after: 149
//@ refuse ipa_cp_callee O2 pie,nopie,static,shlib,dlopen: s_twice
//@ refuse ipa_ra O0 pie,nopie,static: scenario_value; -fipa-stack-alignment
//@ refuse ipa_ra O2 pie,nopie,static: scenario_value; -fipa-modref -fipa-pure-const -fipa-ra -fipa-reference -fipa-stack-alignment
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
static int s_count = 70;
int g_static_reset;

static NOINLINE int s_twice(int x)
{
    return 2 * x;
}

NOINLINE int scen_static(void)
{
    if (g_static_reset)  /* a write keeps s_count in memory */
        s_count = g_static_reset;
    return s_twice(s_count) + 1;
}

int scenario_value(void)
{
    return scen_static();
}
#else
#include "vzp.h"
VZP_FILE("static_file.c");
VZP_STATIC_VAR_REF(int, s_count);
VZP_STATIC_FUNC_REF(int, s_twice, (int));

int scen_static(void)
{
    return s_twice(s_count) + 9;
}
#endif
