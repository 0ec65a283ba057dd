/* Two replaced functions calling each other (each call goes through the
 * target's entry, which jumps to the other's new code). */
//@ before: 10
//@ after: 96
//@ refuse ipa_ra O0 pie,nopie,static: scenario_value; -fipa-stack-alignment
//@ refuse ipa_ra O2 pie,nopie,static: scenario_value; -fipa-modref -fipa-pure-const -fipa-ra -fipa-reference -fipa-stack-alignment
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
int g_depth = 6;
int scen_pong(int n);

NOINLINE int scen_ping(int n)
{
    return n <= 0 ? 1 : scen_pong(n - 1) + 1;
}

NOINLINE int scen_pong(int n)
{
    return n <= 0 ? 2 : scen_ping(n - 1) + 2;
}

int scenario_value(void)
{
    return scen_ping(g_depth);
}
#else
extern int g_depth;
int scen_pong(int n);

int scen_ping(int n)
{
    return n <= 0 ? g_depth : scen_pong(n - 1) + 10;
}

int scen_pong(int n)
{
    return n <= 0 ? 2 * g_depth : scen_ping(n - 1) + 20;
}
#endif
