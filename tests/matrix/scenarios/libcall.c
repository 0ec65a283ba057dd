/* The patch calls external library functions (snprintf, strtol from libc). */
//@ before: 201
//@ after: 4003
//@ refuse ipa_ra O2 pie,nopie,static: scenario_value; -fipa-modref -fipa-pure-const -fipa-reference
#include <stdio.h>
#include <stdlib.h>  /* strtol: atoi is inlined into strtol at -O2, so a static target would lack atoi */
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
int g_lib_base = 200;

NOINLINE int scen_lib(void)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%d", g_lib_base + 1);
    return (int)strtol(buf, NULL, 10);
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
    return (int)strtol(buf, NULL, 10) / 10 + 2;  /* "40012" -> 4001 + 2: only right if snprintf ran */
}
#endif
