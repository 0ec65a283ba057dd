/* auth.c - the server's login check (the unit the live patch fixes). */
#include <string.h>
#include "conn.h"

/* 0: logged in, -1: wrong password.  The bug: nothing stops a client from
 * guessing passwords forever on one connection. */
int login(struct conn *c, const char *password)
{
    (void)c;
    return strcmp(password, "secret") == 0 ? 0 : -1;
}
