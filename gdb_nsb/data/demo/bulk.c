/* Patch 2 of the demo series: a 5% bulk discount on top of the loyalty discount of fix.c.
 * It builds on patch 1's rule, so it says so: applying it without fix.so is refused, and so is
 * reverting fix.so while it is applied.  The build passes fix.so's build-id:
 *   cc $(nsb cflags) -shared -DFIX_BUILD_ID='"<build-id of fix.so>"' bulk.c -o bulk.so */
#include "vzp.h"

VZP_NEEDS_PATCH(FIX_BUILD_ID);
VZP_PROVIDES_STATE(1, 1); /* state 1: "quotes include the bulk discount" */
VZP_FILE("server.c");
VZP_STATIC_VAR_REF(int, loyalty_discount);

long quote_price(long base, int quantity)
{
    long price = base * quantity * (100 - loyalty_discount) / 100;
    return quantity >= 3 ? price * 95 / 100 : price;
}
