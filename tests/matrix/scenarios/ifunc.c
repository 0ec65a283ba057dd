/* The patch calls IFUNC functions of libc (strlen, memcpy): they must bind to
 * the implementation, not the resolver. */
//@ before: 10
//@ after: 1118
//@ refuse ipa_ra O2 pie,nopie,static: scenario_value; -fipa-modref -fipa-pure-const -fipa-reference
#include <string.h>
#define NOINLINE __attribute__((noinline, noclone))
#ifndef PATCH
char g_text[32] = "live-patch";

NOINLINE int scen_ifunc(void)
{
    char buf[32];
    size_t n = strlen(g_text);
    memcpy(buf, g_text, n + 1);
    return (int)strlen(buf);
}

int scenario_value(void)
{
    return scen_ifunc();
}
#else
extern char g_text[32];

int scen_ifunc(void)
{
    char buf[32];
    size_t n = strlen(g_text);
    memcpy(buf, g_text, n + 1);
    return (int)strlen(buf) * 100 + (int)n + buf[0];
}
#endif
