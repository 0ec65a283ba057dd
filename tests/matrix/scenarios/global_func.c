/* Redirect a global function; the new code reads a target global. */
//@ before: 101
//@ after: 1102
//@ refuse ipa_ra O0 pie,nopie,static: scenario_value; -fipa-stack-alignment
//@ refuse ipa_ra O2 pie,nopie,static: scenario_value; -fipa-modref -fipa-pure-const -fipa-ra -fipa-reference -fipa-stack-alignment
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
int g_anchor = 100;
int g_one = 1;

NOINLINE int scen_global(int x)
{
    return x + g_one;
}

int scenario_value(void)
{
    return scen_global(g_anchor);
}
#else
extern int g_anchor;

int scen_global(int x)
{
    return x + g_anchor * 10 + 2;
}
#endif
