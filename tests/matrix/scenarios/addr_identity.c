/* &var and &func in the patch are the target's own addresses. */
//@ before: 7
//@ after: 507
//@ refuse ipa_ra O0 pie,nopie,static: scenario_value; -fipa-stack-alignment
//@ refuse ipa_ra O2 pie,nopie,static: scenario_value; -fipa-modref -fipa-pure-const -fipa-ra -fipa-reference -fipa-stack-alignment
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
struct scen_obj { int a; int b; };
struct scen_obj g_obj = { 7, 500 };
struct scen_obj *g_obj_ptr = &g_obj;
NOINLINE int scen_addr_helper(void);
int (*g_helper_ptr)(void) = scen_addr_helper;

NOINLINE int scen_addr_helper(void)
{
    return g_obj.a;
}

NOINLINE int scen_addr(void)
{
    return g_obj_ptr == &g_obj ? g_obj.a : -1;
}

int scenario_value(void)
{
    return scen_addr();
}
#else
struct scen_obj { int a; int b; };
extern struct scen_obj g_obj;
extern struct scen_obj *g_obj_ptr;
extern int (*g_helper_ptr)(void);
extern int scen_addr_helper(void);

int scen_addr(void)
{
    if (&g_obj != g_obj_ptr)
        return -2;
    if (scen_addr_helper != g_helper_ptr)
        return -3;
    return g_obj.a + g_obj.b;
}
#endif
