/* fix.c - the live patch: lock a connection after 3 wrong passwords.
 *
 * The count of failed logins is new state per connection, and struct conn
 * cannot grow: it lives in a shadow variable attached to the connection,
 * (c, FAILED_LOGINS), created on the first login the fixed code sees.
 *
 *   cc $(nsb cflags) -shared fix.c -o fix.so && nsb generate server fix.so
 *   nsb patch -p PID -f fix.so        (nsb revert -p PID -f fix.so)
 */
#include <string.h>
#include "vzp.h"
#include "conn.h"

#define FAILED_LOGINS 1 /* shadow variable id: one per kind of data, chosen by the patch */
#define MAX_FAILURES 3

/* Replaces login(): the same prototype, the same unit. */
int login(struct conn *c, const char *password)
{
    int *failed = vzp_shadow_get_or_alloc(c, FAILED_LOGINS, sizeof *failed, NULL, NULL);
    if (failed && __atomic_load_n(failed, __ATOMIC_RELAXED) >= MAX_FAILURES)
        return -2;
    if (strcmp(password, "secret") == 0) {
        if (failed)
            __atomic_store_n(failed, 0, __ATOMIC_RELAXED);
        return 0;
    }
    if (failed)
        __atomic_add_fetch(failed, 1, __ATOMIC_RELAXED);
    return -1;
}

/* Taken out again, the fix forgets its counts (shadow data outlives a
 * revert unless a callback frees it, as in the kernel). */
void failed_logins_forget(void)
{
    vzp_shadow_free_all(FAILED_LOGINS, NULL);
}
VZP_POST_UNPATCH(failed_logins_forget)
