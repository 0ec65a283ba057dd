/* conn.h - a connection.  Its layout is fixed: plugins built against it
 * are loaded into the running server, so the fix cannot add a field. */
struct conn {
    int id;
    char user[16];
};
int login(struct conn *c, const char *password);
