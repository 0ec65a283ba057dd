/* The patch reads one target global and writes another, which unpatched
 * target code then reads back. */
//@ before: 41
//@ after: 120
//@ refuse ipa_ra O0 pie,nopie,static: scenario_value; -fipa-stack-alignment
//@ refuse ipa_ra O2 pie,nopie,static: scenario_value; -fipa-modref -fipa-pure-const -fipa-ra -fipa-reference -fipa-stack-alignment
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
int g_in = 40;
int g_out;

NOINLINE void scen_store(void)
{
    g_out = g_in + 1;
}

int scenario_value(void)
{
    scen_store();
    return __atomic_load_n(&g_out, __ATOMIC_SEQ_CST);
}
#else
extern int g_in;
extern int g_out;

void scen_store(void)
{
    g_out = g_in * 3;
}
#endif
