/* The patch calls external library functions (snprintf, atoi from libc). */
//@ before: 201
//@ after: 4003
//@ ipa_ra: scenario_value
#include <stdio.h>
#include <stdlib.h>
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
int g_lib_base = 200;

NOINLINE int scen_lib(void)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%d", g_lib_base + 1);
    return atoi(buf);
}

int scenario_value(void)
{
    return scen_lib();
}
#else
extern int g_lib_base;

int scen_lib(void)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%d%d", g_lib_base * 2, 12);
    return atoi(buf) / 10 + 2;  /* "40012" -> 4001 + 2: only right if snprintf ran */
}
#endif
