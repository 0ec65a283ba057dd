/* Patch 3 of the demo series: everything fix.c and bulk.c did, plus prices rounded down to
 * whole tens.  It is cumulative: applying it replaces fix.so and bulk.so in one stop, and
 * reverting it gives back the original program.  It carries state 1 forward. */
#include "vzp.h"

VZP_CUMULATIVE;
VZP_PROVIDES_STATE(1, 1);
VZP_FILE("server.c");
VZP_STATIC_VAR_REF(int, loyalty_discount);

long quote_price(long base, int quantity)
{
    long price = base * quantity * (100 - loyalty_discount) / 100;
    if (quantity >= 3)
        price = price * 95 / 100;
    return price / 10 * 10;
}
