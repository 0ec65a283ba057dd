/* New helper functions that exist only in the patch (static and global). */
//@ before: 12
//@ after: 1255
//@ refuse ipa_ra O0 pie,nopie,static: scenario_value; -fipa-stack-alignment
//@ refuse ipa_ra O2 pie,nopie,static: scenario_value; -fipa-modref -fipa-pure-const -fipa-ra -fipa-reference -fipa-stack-alignment
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
int g_helper_base = 11;

NOINLINE int scen_helped(void)
{
    return g_helper_base + 1;
}

int scenario_value(void)
{
    return scen_helped();
}
#else
extern int g_helper_base;

static int patch_only_times(int x, int k)
{
    return x * k;
}

int patch_only_plus(int x)
{
    return patch_only_times(x, 100) + 55;
}

int scen_helped(void)
{
    return patch_only_plus(g_helper_base + 1);
}
#endif
