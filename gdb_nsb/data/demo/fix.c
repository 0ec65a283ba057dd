/* The live patch for the demo server: apply the loyalty discount.
 * It reaches the server's file-static `loyalty_discount` through vzp.h. */
#include "vzp.h"

VZP_FILE("server.c");
VZP_STATIC_VAR_REF(int, loyalty_discount);

long quote_price(long base, int quantity)
{
    return base * quantity * (100 - loyalty_discount) / 100;
}
