/* Signal handler frames on the stacks: a thread is taking SIGUSR1 every
 * millisecond and calls the replaced function inside its handler. */
//@ before: 33
//@ after: 96
//@ driver: sig
//@ refuse ipa_ra O0 pie,nopie,static: scenario_value; -fipa-stack-alignment
//@ refuse ipa_ra O2 pie,nopie,static: scenario_value; -fipa-modref -fipa-pure-const -fipa-ra -fipa-reference -fipa-stack-alignment
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
int g_sig_base = 32;

NOINLINE int scen_sig(void)
{
    return g_sig_base + 1;
}

int scenario_value(void)
{
    return scen_sig();
}
#else
extern int g_sig_base;

int scen_sig(void)
{
    return g_sig_base * 3;
}
#endif
