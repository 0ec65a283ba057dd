/* Hidden, protected and internal variables and functions of the target. */
//@ before: 6
//@ after: 510341
//@ refuse ipa_ra O0 pie,nopie,static: scenario_value; -fipa-stack-alignment
//@ refuse ipa_ra O2 pie,nopie,static: scenario_value; -fipa-modref -fipa-pure-const -fipa-ra -fipa-reference -fipa-stack-alignment
#define NOINLINE __attribute__((noinline, noclone))
#define HIDDEN __attribute__((visibility("hidden")))
#define PROTECTED __attribute__((visibility("protected")))
#define INTERNAL __attribute__((visibility("internal")))
#ifndef PATCH
HIDDEN int h_var = 1;
PROTECTED int p_var = 2;
INTERNAL int i_var = 3;
HIDDEN NOINLINE int h_func(void) { return h_var * 10; }
PROTECTED NOINLINE int p_func(void) { return p_var * 100; }
INTERNAL NOINLINE int i_func(void) { return i_var * 1000; }
int g_vis_fns_used;

NOINLINE int scen_vis(void)
{
    if (g_vis_fns_used)  /* keeps the three functions called from target code */
        return h_func() + p_func() + i_func();
    return h_var + p_var + i_var;
}

int scenario_value(void)
{
    return scen_vis();
}
#else
#include "vzp.h"
VZP_HIDDEN_VAR_REF(int, h_var);
VZP_PROTECTED_VAR_REF(int, p_var);
VZP_INTERNAL_VAR_REF(int, i_var);
VZP_HIDDEN_FUNC_REF(int, h_func, (void));
VZP_PROTECTED_FUNC_REF(int, p_func, (void));
VZP_INTERNAL_FUNC_REF(int, i_func, (void));

int scen_vis(void)
{
    return h_var + p_var * 20 + i_var * 100 + h_func() * 1000 + p_func() * 1000 + i_func() * 100;
}
#endif
