/* VZP_STATIC_SYM_ALIAS: a file-scope static and a function-local static share
 * the name s_hits; a static function is replaced under another patch name. */
//@ before: 1027
//@ after: 2075
//@ refuse ipa_ra O0 pie,nopie,static,shlib,dlopen: scenario_value; -fipa-stack-alignment
//@ refuse ipa_ra O2 pie,nopie,static,shlib,dlopen: scenario_value; -fipa-modref -fipa-pure-const -fipa-ra -fipa-reference -fipa-stack-alignment; replace
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
static int s_hits = 5;
int g_alias_reset;
int g_alias_step = 1;

static NOINLINE int s_step(int x)
{
    return x + g_alias_step;
}

NOINLINE int scen_alias(void)
{
    static int s_hits = 20;
    if (g_alias_reset)  /* writes keep both statics in memory */
        s_hits = g_alias_reset;
    return s_step(s_hits);
}

int scenario_value(void)
{
    if (g_alias_reset)
        s_hits = g_alias_reset;
    return scen_alias() + s_step(1000) + s_hits;
}
#else
#include "vzp.h"
VZP_FILE("alias.c");
VZP_STATIC_VAR_REF(int, s_hits);
VZP_STATIC_SYM_ALIAS(s_step_v2, s_step);

static __attribute__((used)) int s_step_v2(int x)
{
    return x * 2 + s_hits;
}

int scen_alias(void)
{
    VZP_STATIC_VAR_REF(int, local_hits);
    VZP_STATIC_SYM_ALIAS(local_hits, s_hits);
    return local_hits * 3 + s_hits;
}

#ifdef REPLACE_CALLERS
/* Plain -O2: scenario_value relies on the old s_step (the override gives 4010, not 2075). */
extern int g_alias_reset;

int scenario_value(void)
{
    if (g_alias_reset)
        s_hits = g_alias_reset;
    return scen_alias() + s_step_v2(1000) + s_hits;
}
#endif
#endif
