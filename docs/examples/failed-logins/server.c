/* server.c - a toy server: connections 0-7 log in through stdin lines
 * "login ID PASSWORD"; the answer is "ok", "denied" or "locked". */
#include <stdio.h>
#include <string.h>
#include "conn.h"

static struct conn conns[8];

int main(void)
{
    char line[128], password[64];
    int id;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (id = 0; id < 8; id++)
        conns[id].id = id;
    printf("ready\n");
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "login %d %63s", &id, password) != 2 || id < 0 || id >= 8) {
            printf("usage: login ID PASSWORD\n");
            continue;
        }
        int r = login(&conns[id], password);
        printf("%s\n", r == 0 ? "ok" : r == -2 ? "locked" : "denied");
    }
    return 0;
}
